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

from pipeline.cas import classifier, frontier_spec, train_classifier
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
from pipeline.latent_density import saved_density
from pipeline.metrics import FrontierRows, GuidedEval, eval_schema, read_metrics, validate_metrics
from pipeline.models.guidance import null_condition
from pipeline.train import FitRun

RULE = (
    "the (sampler, w, T) of the sweep with the highest validation judge accuracy among the "
    "points good on both axes: validation FD not above that of the prior at w = 0, T = {t}, "
    "and validation CAS within {tolerance} of the best point's"
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


@dataclass(frozen=True)
class ValidationCas:
    """The cheap CAS of a validation point: a fresh classifier of the judge's architecture
    trained by ``spec`` (the cas.frontier recipe) on the point's first sample set, tested on
    the real validation images ``real`` (x, y). The rule's coverage axis (``choose_point``)."""

    real: tuple[torch.Tensor, torch.Tensor]
    spec: object  # a FitSpec
    feature_dim: int

    def score(self, samples: torch.Tensor, intended: torch.Tensor, name: str) -> float:
        generator = torch.Generator().manual_seed(self.spec.seed)
        torch.manual_seed(self.spec.seed)  # the classifier's initial weights
        net = classifier(self.feature_dim, samples.device)
        run = FitRun(f"validation cas {name}", generator, fingerprint="")
        history = train_classifier(net, self.spec, (samples, intended), self.real, run)
        return float(history[-1]["test/accuracy"])


@dataclass
class FrontierScorer:
    """Scores sample sets drawn under ``conditions`` (one per seed) against real features;
    each (sampler, w, T) point is computed once. ``density``: the ex-post latent density of
    sampler expost (None: prior only); ``cas``: also the validation CAS of each point."""

    model: torch.nn.Module
    conditions: torch.Tensor
    intended: torch.Tensor
    judging: Judging  # the judge, the real features and the class names
    seeds: list[int]
    density: object = None  # pipeline.latent_density.ExPostDensity
    cas: ValidationCas | None = None
    _points: dict = field(default_factory=dict)

    def point(self, guidance: float, temperature: float, sampler: str = "prior") -> dict:
        key = (sampler, float(guidance), float(temperature))
        if key not in self._points:
            self.sweep([guidance], [temperature], [sampler])
        return self._points[key]

    @torch.no_grad()
    def sweep(
        self, guidances: list[float], temperatures: list[float], samplers=("prior",)
    ) -> list[dict]:
        """The points of every (sampler, T, w), in that order. Under one sampler, seed and T
        every w decodes the same z, so the decoder runs twice per seed and T (with c and with
        the null) and each w only mixes the two logits; w = 0 is ``model.decode`` itself, bit
        for bit."""
        for sampler in samplers:
            density = self._density(sampler)
            for t in temperatures:
                self._sweep_one(sampler, density, guidances, float(t))
        return [
            self._points[(s, float(w), float(t))]
            for s in samplers
            for t in temperatures
            for w in guidances
        ]

    def _density(self, sampler: str):
        if sampler == "prior":
            return None
        if sampler != "expost" or self.density is None:
            raise PipelineError(f"sampler {sampler}: this model has no ex-post density")
        return self.density

    def _sweep_one(self, sampler: str, density, guidances: list[float], t: float) -> None:
        todo = [float(w) for w in guidances if (sampler, float(w), t) not in self._points]
        scores: dict[float, list] = {w: [] for w in todo}
        first: dict[float, torch.Tensor] = {}
        for seed in self.seeds if todo else []:
            self.model.eval()
            generator = torch.Generator().manual_seed(seed)
            z = draw_latents(self.model, self.conditions, generator, t, density)
            logits = self.model.decode_logits(z, self.conditions)
            null = None
            if any(todo):
                null = self.model.decode_logits(z, null_condition(self.conditions))
            for w in todo:
                mixed = logits if w == 0 else logits + w * (logits - null)
                images = self.model.images_from_logits(mixed)
                scores[w].append(self._score(images))
                if self.cas is not None and w not in first:
                    first[w] = images
        for w in todo:
            accuracy, frechet, spread = zip(*scores[w], strict=True)
            point = {
                "sampler": sampler,
                "guidance": w,
                "temperature": t,
                "accuracy": summarise(list(accuracy)),
                "frechet": mean_std(list(frechet)),
                "spread": mean_std(list(spread)),
            }
            if self.cas is not None:
                label = f"{sampler} w={w:g} T={t:g}"
                with torch.enable_grad():
                    point["cas"] = self.cas.score(first[w], self.intended, label)
            self._points[(sampler, w, t)] = point

    def _score(self, samples: torch.Tensor) -> tuple[dict, float, float]:
        require_finite_tensor(samples, "guided samples")  # never scored
        j = self.judging
        predicted, features = judge_outputs(j.judge, samples, j.batch_size)
        return (
            conditional_accuracy(predicted, self.intended, j.names),
            frechet_distance(features, j.real_features),
            class_spread(features, self.intended),
        )


def choose_point(val_points: list[dict], trained_with_dropout: bool, fixed, tolerance: float):
    """(sampler, w, T, the rule that chose them) from the validation points. ``fixed``:
    (sampler, w, T), each None where params leave it to the rule. A fixed w > 0 for a model
    trained without the null condition is refused: it has nothing to guide away from (its
    frontier still sweeps w, against the zero vector it never saw: docs/guidance.md)."""
    sampler, w, t = fixed
    if w is not None and w > 0 and not trained_with_dropout:
        raise PipelineError(
            f"evaluate.guidance {w:g}: the model was trained without the null condition "
            "(its config.json: cond_null_p 0), so it cannot be guided; set guidance: null or 0"
        )
    if not trained_with_dropout:
        w = 0.0
    if None not in (sampler, w, t):
        rule = "fixed by evaluate.<model>.sampler, guidance and temperature"
        if not trained_with_dropout and fixed[1] is None:
            rule = f"sampler and temperature fixed by evaluate.<model>; {NO_DROPOUT}"
        return sampler, w, t, rule
    points = [
        q
        for q in val_points
        if (sampler is None or q["sampler"] == sampler)
        and (w is None or q["guidance"] == w)
        and (t is None or q["temperature"] == t)
    ]
    temperatures = sorted({q["temperature"] for q in val_points})
    t_base = 1.0 if 1.0 in temperatures else temperatures[0]
    base = next(
        q
        for q in val_points
        if (q["sampler"], q["guidance"], q["temperature"]) == ("prior", 0.0, t_base)
    )
    best_cas = max(q["cas"] for q in points)
    allowed = [
        q
        for q in points
        if q["frechet"]["mean"] <= base["frechet"]["mean"] and q["cas"] >= best_cas - tolerance
    ] or [max(points, key=lambda q: q["cas"])]
    best = max(
        allowed,
        key=lambda q: (
            q["accuracy"]["overall"]["mean"],
            -q["guidance"],
            q["sampler"] == "prior",
            -abs(q["temperature"] - 1.0),
        ),
    )
    rule = RULE.format(tolerance=f"{tolerance:g}", t=f"{t_base:g}")
    if not trained_with_dropout:
        rule += f"; {NO_DROPOUT}"
    return best["sampler"], best["guidance"], best["temperature"], rule


def plot_rows(points: list[dict], real_spread: float) -> list[dict]:
    """Flat rows for `dvc plots` (x: frechet, y: accuracy) and the report's chart: frontier.json,
    checked against its schema (pipeline/metrics.py FrontierRows: finite, in range, each
    (w, T) once, at most 64 points) before anything is written."""
    rows = [
        {
            "sampler": p["sampler"],
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


def sampler_density(model_dir, meta, model, samplers):
    """The ex-post density saved beside the model when any of ``samplers`` is expost (checked
    by pipeline/latent_density.py's ``saved_density``), else None."""
    if "expost" not in samplers:
        return None
    return saved_density(model_dir, meta, model.config.latent_dim, len(meta.labels or []))


def validation_setup(raw_dir, p, judge, params, device) -> tuple:
    """(judge features, labels, :class:`ValidationCas`) of the last ``p.val_images`` training
    images: what an evaluation chooses its point against (``params``: the whole params, for
    the cas.frontier recipe and the judge's feature size)."""
    features, labels, images = validation_reference(
        raw_dir, p.val_images, judge, p.batch_size, device
    )
    cas = ValidationCas(
        (images, labels.to(device)), frontier_spec(params.cas), params.judge.feature_dim
    )
    return features, labels, cas


VAL_SEED_OFFSET = 1000  # validation sample sets use seeds seed + 1000, ...: not the test sets'


def validation_reference(raw_dir, n: int, judge, batch_size: int, device) -> tuple:
    """(judge features, labels, images) of the last ``n`` training images: the real images
    that validation FD, spread and CAS compare with (never the test set)."""
    from pipeline.data.fmnist import load_tensors

    x, y = load_tensors(raw_dir, "train", None, device)
    if n >= len(x):
        raise ValueError(f"val_images {n} must be below the {len(x)} training images")
    _, features = judge_outputs(judge, x[-n:], batch_size)
    return features, y[-n:].cpu(), x[-n:]


def guided_frontier(
    p, val: FrontierScorer, test: FrontierScorer, trained_with_dropout: bool, spreads: dict
) -> tuple[tuple[str, float, float], dict, dict, list[dict]]:
    """Sweep (sampler, w, T) on ``val`` (T: p.temperature, or with null every T of the sweep),
    choose the point, sweep every (sampler, w, T) on ``test``. A text model's evaluation has no
    sampler keys: it samples its prior.

    Returns ((sampler, w, T), the test point there, the guidance keys of eval.json, the
    frontier's plot rows). ``spreads``: the real images' spread, {"validation", "test"}.
    eval.json gets ``frontier`` (the test points, mean ± std), ``guidance`` (the chosen
    sampler, w and T), ``guidance_rule`` and ``guidance_validation`` (the points the rule saw,
    with their validation CAS).
    """
    samplers = getattr(p, "sampler_sweep", ["prior"])
    fixed = (getattr(p, "sampler", "prior"), p.guidance, p.temperature)
    free = fixed
    if not trained_with_dropout and not p.guidance:
        free = (fixed[0], 0.0, fixed[2])  # nothing to choose: w = 0 (a fixed w > 0: refused)
    # validation scores only the candidates (the axes params leave free), and the prior at
    # w = 0 and T = 1 that the rule's FD bar is read from
    candidates = [
        [v] if v is not None else sweep
        for v, sweep in zip(free, (samplers, p.guidance_sweep, p.temperature_sweep), strict=True)
    ]
    val_points = val.sweep(candidates[1], candidates[2], candidates[0])
    t_base = 1.0 if 1.0 in candidates[2] else candidates[2][0]
    if not any(validation_key(*_at(q)) == validation_key("prior", 0.0, t_base) for q in val_points):
        val_points = [val.point(0.0, t_base, "prior"), *val_points]
    sampler, w, t, rule = choose_point(val_points, trained_with_dropout, fixed, p.cas_tolerance)
    points = test.sweep(p.guidance_sweep, p.temperature_sweep, samplers)
    keys = {
        "frontier": [
            {
                **{k: q[k] for k in ("sampler", "guidance", "temperature", "frechet", "spread")},
                "accuracy": q["accuracy"]["overall"],
            }
            for q in points
        ],
        "guidance": {"w": w, "temperature": t, "sampler": sampler},
        "guidance_rule": rule,
        "guidance_validation": {
            validation_key(row["sampler"], row["guidance"], row["temperature"]): {
                **{k: row[k] for k in ("accuracy", "frechet", "spread")},
                "cas": q["cas"],
            }
            for row, q in zip(plot_rows(val_points, spreads["validation"]), val_points, strict=True)
        },
        "guidance_validation_real_spread": spreads["validation"],
    }
    return (sampler, w, t), test.point(w, t, sampler), keys, plot_rows(points, spreads["test"])


def _at(point: dict) -> tuple[str, float, float]:
    return point["sampler"], point["guidance"], point["temperature"]


def validation_key(sampler: str, w: float, t: float) -> str:
    """A validation point's key in eval.json's ``guidance_validation``: "prior w=0 T=1"."""
    return f"{sampler} w={w:g} T={t:g}"


def read_chosen_point(path, kind) -> tuple[str, float, float]:
    """The (sampler, w, T) an evaluation chose: ``conditions.sampler``, ``guidance`` and
    ``temperature`` of the eval.json at ``path``, read through its schema (pipeline/metrics.py):
    w a number in [0, 20], never true, "1e3" or NaN; the sampler prior or expost. ``kind``: what
    the model is (its params entry, or its saved config's meta), which picks the schema. A bad
    or missing file is one PipelineError naming it and the key."""
    schema = eval_schema(kind)
    if schema is None or not issubclass(schema, GuidedEval):
        raise PipelineError(f"{path}: this model's evaluation chooses no guidance w")
    if not Path(path).is_file():
        raise PipelineError(f"{path}: no conditions.guidance (no such file); run evaluate first")
    conditions = read_metrics(path, schema).conditions
    return conditions.sampler, conditions.guidance, conditions.temperature


def read_chosen_guidance(path, kind) -> float:
    """The w of :func:`read_chosen_point`."""
    return read_chosen_point(path, kind)[1]
