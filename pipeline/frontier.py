"""The guidance frontier of a Fashion-MNIST model: fidelity against diversity as w grows.

For each guidance w and temperature T (evaluate.<model>.guidance_sweep, temperature_sweep),
one sample set per seed is scored by the judge:

    accuracy  share of samples the judge assigns to the class they were drawn for
    frechet   Fréchet distance of their judge features to the real images' features
    spread    mean distance of a sample's judge features to its class's centroid: how varied
              the samples of one class are; the real images' own spread stands beside it

each as {"mean", "std"} over the seeds. Higher accuracy and lower FD are better; a spread far
below the real one means the samples collapse toward a class mean (what guidance risks).

w is chosen on validation data only (``choose_guidance``): the last ``val_images`` training
images for label models, the validation phrasings for text models; the test set only reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import PipelineError
from pipeline.evaluate import (
    Judging,
    conditional_accuracy,
    draw_latents,
    frechet_distance,
    judge_outputs,
    mean_std,
    summarise,
)
from pipeline.finite import require_finite_tensor
from pipeline.metrics import FrontierRows, GuidedEval, eval_schema, read_metrics, validate_metrics
from pipeline.models.guidance import null_condition

RULE = (
    "the w of the sweep (at evaluate.<model>.temperature) with the highest validation judge "
    "accuracy whose validation FD is not above that of w = 0"
)
NO_DROPOUT = "trained without condition dropout (cond_null_p 0): no null condition learned, w = 0"


def class_spread(features: np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """Mean Euclidean distance of each feature row to the centroid of its class's rows."""
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    total = 0.0
    for k in np.unique(labels):
        rows = features[labels == k]
        total += float(np.linalg.norm(rows - rows.mean(0), axis=1).sum())
    return total / len(features)


@dataclass
class FrontierScorer:
    """Scores sample sets drawn under ``conditions`` (one per seed) against real features;
    each (w, T) point is computed once."""

    model: torch.nn.Module
    conditions: torch.Tensor
    intended: torch.Tensor
    judging: Judging  # the judge, the real features and the class names
    seeds: list[int]
    _points: dict = field(default_factory=dict)

    def point(self, guidance: float, temperature: float) -> dict:
        key = (float(guidance), float(temperature))
        if key not in self._points:
            self.sweep([guidance], [temperature])
        return self._points[key]

    @torch.no_grad()
    def sweep(self, guidances: list[float], temperatures: list[float]) -> list[dict]:
        """The points of every (w, T), T outermost. Under one seed and T every w decodes the
        same z, so the decoder runs twice per seed and T (with c and with the null) and each
        w only mixes the two logits; w = 0 is ``model.decode`` itself, bit for bit."""
        for t in temperatures:
            todo = [float(w) for w in guidances if (float(w), float(t)) not in self._points]
            scores: dict[float, list] = {w: [] for w in todo}
            for seed in self.seeds if todo else []:
                self.model.eval()
                generator = torch.Generator().manual_seed(seed)
                z = draw_latents(self.model, self.conditions, generator, t)
                logits = self.model.decode_logits(z, self.conditions)
                null = None
                if any(todo):
                    null = self.model.decode_logits(z, null_condition(self.conditions))
                for w in todo:
                    mixed = logits if w == 0 else logits + w * (logits - null)
                    scores[w].append(self._score(self.model.images_from_logits(mixed)))
            for w in todo:
                accuracy, frechet, spread = zip(*scores[w], strict=True)
                self._points[(w, float(t))] = {
                    "guidance": w,
                    "temperature": float(t),
                    "accuracy": summarise(list(accuracy)),
                    "frechet": mean_std(list(frechet)),
                    "spread": mean_std(list(spread)),
                }
        return [self._points[(float(w), float(t))] for t in temperatures for w in guidances]

    def _score(self, samples: torch.Tensor) -> tuple[dict, float, float]:
        require_finite_tensor(samples, "guided samples")  # never scored
        j = self.judging
        predicted, features = judge_outputs(j.judge, samples, j.batch_size)
        return (
            conditional_accuracy(predicted, self.intended, j.names),
            frechet_distance(features, j.real_features),
            class_spread(features, self.intended),
        )


def choose_guidance(val_points: list[dict], trained_with_dropout: bool, fixed: float | None):
    """(w, the rule that chose it) from the validation points of one temperature. A fixed
    w > 0 for a model trained without the null condition is refused: it has nothing to guide
    away from (its frontier still sweeps w, against the zero vector it never saw:
    docs/guidance.md)."""
    if fixed is not None:
        if fixed > 0 and not trained_with_dropout:
            raise PipelineError(
                f"evaluate.guidance {fixed:g}: the model was trained without the null condition "
                "(its config.json: cond_null_p 0), so it cannot be guided; set guidance: null or 0"
            )
        return fixed, "fixed by evaluate.<model>.guidance"
    if not trained_with_dropout:
        return 0.0, NO_DROPOUT
    base = next(p for p in val_points if p["guidance"] == 0.0)["frechet"]["mean"]
    allowed = [p for p in val_points if p["frechet"]["mean"] <= base]
    best = max(allowed, key=lambda p: (p["accuracy"]["overall"]["mean"], -p["guidance"]))
    return best["guidance"], RULE


def plot_rows(points: list[dict], real_spread: float) -> list[dict]:
    """Flat rows for `dvc plots` (x: frechet, y: accuracy) and the report's chart: frontier.json,
    checked against its schema (pipeline/metrics.py FrontierRows: finite, in range, each
    (w, T) once, at most 64 points) before anything is written."""
    rows = [
        {
            "guidance": p["guidance"],
            "temperature": p["temperature"],
            "accuracy": p["accuracy"]["overall"]["mean"],
            "accuracy_std": p["accuracy"]["overall"]["std"],
            "frechet": p["frechet"]["mean"],
            "frechet_std": p["frechet"]["std"],
            "spread": p["spread"]["mean"],
            "spread_std": p["spread"]["std"],
            "real_spread": real_spread,
        }
        for p in points
    ]
    validate_metrics(rows, "the frontier's rows", FrontierRows, "nothing written")
    return rows


VAL_SEED_OFFSET = 1000  # validation sample sets use seeds seed + 1000, ...: not the test sets'


def validation_reference(raw_dir, n: int, judge, batch_size: int, device) -> tuple:
    """(judge features, labels) of the last ``n`` training images: the real images that
    validation FD and spread compare with (never the test set)."""
    from pipeline.data.fmnist import load_tensors

    x, y = load_tensors(raw_dir, "train", None, device)
    if n >= len(x):
        raise ValueError(f"val_images {n} must be below the {len(x)} training images")
    _, features = judge_outputs(judge, x[-n:], batch_size)
    return features, y[-n:].cpu()


def guided_frontier(
    p, val: FrontierScorer, test: FrontierScorer, trained_with_dropout: bool, spreads: dict
) -> tuple[float, dict, dict, list[dict]]:
    """Sweep w on ``val`` (at p.temperature), choose it, sweep (w, T) on ``test``.

    Returns (w, the test point at (w, p.temperature), the guidance keys of eval.json, the
    frontier's plot rows). ``spreads``: the real images' spread, {"validation", "test"}.
    eval.json gets ``frontier`` (the test points, mean ± std), ``guidance`` (the chosen w and
    T), ``guidance_rule`` and ``guidance_validation`` (the points the rule saw).
    """
    val_points = val.sweep(p.guidance_sweep, [p.temperature])
    w, rule = choose_guidance(val_points, trained_with_dropout, p.guidance)
    points = test.sweep(p.guidance_sweep, p.temperature_sweep)
    keys = {
        "frontier": [
            {
                **{k: q[k] for k in ("guidance", "temperature", "frechet", "spread")},
                "accuracy": q["accuracy"]["overall"],
            }
            for q in points
        ],
        "guidance": {"w": w, "temperature": p.temperature},
        "guidance_rule": rule,
        "guidance_validation": {
            f"w={row['guidance']:g}": {k: row[k] for k in ("accuracy", "frechet", "spread")}
            for row in plot_rows(val_points, spreads["validation"])
        },
        "guidance_validation_real_spread": spreads["validation"],
    }
    return w, test.point(w, p.temperature), keys, plot_rows(points, spreads["test"])


def read_chosen_guidance(path, kind) -> float:
    """The w an evaluation chose: ``conditions.guidance`` of the eval.json at ``path``, read
    through its schema (pipeline/metrics.py): a number in [0, 20], never true, "1e3" or NaN.
    ``kind``: what the model is (its params entry, or its saved config's meta), which picks the
    schema. A bad or missing file is one PipelineError naming it and the key."""
    schema = eval_schema(kind)
    if schema is None or not issubclass(schema, GuidedEval):
        raise PipelineError(f"{path}: this model's evaluation chooses no guidance w")
    if not Path(path).is_file():
        raise PipelineError(f"{path}: no conditions.guidance (no such file); run evaluate first")
    return read_metrics(path, schema).conditions.guidance
