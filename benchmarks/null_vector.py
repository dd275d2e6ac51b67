"""The null condition of guidance (issue 20, part 1): zeros against a learned null vector.

Condition dropout gives a row the null condition; guided sampling decodes with it too
(pipeline/models/guidance.py). The pipeline's null is the zero vector. The alternative is a
learned vector e, a parameter trained with the model wherever a row is dropped. This probe
trains ``fmnist_text_prior`` twice from the same seed on the same data and schedule, once
with each null, and scores held-out phrasings (never trained on) with the committed judge at
every w of the sweep, as ``evaluate_text`` does: judge accuracy, judge-feature FD and spread,
mean ± std over sample seeds.

The learned null is a wrapper, not a change of the model (the model's files and config stay
the pipeline's): a row that arrives all-zero (the dropout's marker; no caption embedding is
zero, MiniLM's are unit-norm) is replaced by e before the model sees it, in training and
in sampling. e starts at zero, so both runs begin identical.

    python benchmarks/null_vector.py                 # needs models/judge and the embeddings
    python benchmarks/null_vector.py --epochs 40     # the main job's schedule
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.checkpoint import load_model  # noqa: E402
from pipeline.config import load_params  # noqa: E402
from pipeline.data.captions import fmnist_caption_set  # noqa: E402
from pipeline.data.embeddings import caption_lookup  # noqa: E402
from pipeline.data.fmnist import LABELS, load_tensors  # noqa: E402
from pipeline.data.phrasings import PhrasingBatches, train_phrasings  # noqa: E402
from pipeline.evaluate import Judging, judge_outputs  # noqa: E402
from pipeline.frontier import FrontierScorer  # noqa: E402
from pipeline.models.judge import JudgeCNN  # noqa: E402
from pipeline.models.registry import build  # noqa: E402
from pipeline.runtime import make_deterministic  # noqa: E402
from pipeline.train import FitData, FitRun, fit  # noqa: E402

NAME = "fmnist_text_prior"


class LearnedNull(nn.Module):
    """``inner`` with all-zero condition rows replaced by a learned vector ``null``."""

    def __init__(self, inner: nn.Module, cond_dim: int):
        super().__init__()
        self.inner, self.config = inner, inner.config
        self.null = nn.Parameter(torch.zeros(cond_dim))

    def swap(self, c: torch.Tensor) -> torch.Tensor:
        dropped = (c == 0).all(dim=1, keepdim=True)
        return torch.where(dropped, self.null.expand_as(c), c)

    def batch_losses(self, x, c, *rest):
        return self.inner.batch_losses(x, self.swap(c), *rest)

    def prior(self, c):
        return self.inner.prior(self.swap(c))

    def decode_logits(self, z, c):
        return self.inner.decode_logits(z, self.swap(c))

    def decode(self, z, c):
        return self.inner.decode(z, self.swap(c))

    def images_from_logits(self, logits):
        return self.inner.images_from_logits(logits)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--samples-per-caption", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/null_vector.json")
    args = ap.parse_args(argv)
    entry = load_params(ROOT / "params.yaml").model(NAME)
    p = entry.train.model_copy(update={"epochs": args.epochs})
    ev = entry.evaluate
    device = torch.device("cpu")
    folder = ROOT / "data/embeddings" / entry.conditioning / "fmnist"
    phrasings = train_phrasings(folder, fmnist_caption_set()["train"], len(LABELS))
    x_train, y_train = load_tensors(ROOT / "data/raw/fmnist", "train", p.train_limit, device)
    x_test, y_test = load_tensors(ROOT / "data/raw/fmnist", "test", None, device)
    judge, _ = load_model(ROOT / "models/judge", device, expect=JudgeCNN)
    _, test_features = judge_outputs(judge, x_test, 500)
    row_of, vectors = caption_lookup(folder)
    rows = fmnist_caption_set()["heldout"]
    index = torch.tensor([row_of[r["caption_id"]] for r in rows])
    intended = torch.tensor([r["image_id"] for r in rows])
    index, intended = (t.repeat_interleave(args.samples_per_caption) for t in (index, intended))
    cond_dim = phrasings.embeddings.shape[1]
    results = {}
    for variant in ("zeros", "learned"):
        generator = make_deterministic(p.seed, device)
        sizes = {"input_dim": x_train.shape[1], "cond_dim": cond_dim}
        model = build(f"models.{NAME}.arch", entry.class_name, entry.arch, **sizes).to(device)
        if variant == "learned":
            model = LearnedNull(model, cond_dim)
        start = time.perf_counter()
        data = FitData(
            PhrasingBatches(x_train, y_train, phrasings, batch_size=p.batch_size),
            PhrasingBatches(x_test, y_test, phrasings, batch_size=1000),
        )
        history = fit(model, data, p, FitRun(f"{NAME} ({variant} null)", generator, ""))
        seconds = time.perf_counter() - start
        seeds = [ev.seed + i for i in range(args.seeds)]
        judging = Judging(judge, test_features, LABELS, 500)
        scorer = FrontierScorer(model, vectors[index], intended, judging, seeds)
        points = scorer.sweep(ev.guidance_sweep, [1.0])
        results[variant] = {
            "train_seconds": round(seconds, 1),
            "test_loss": history[-1]["test/loss"],
            "heldout": [
                {
                    "w": q["guidance"],
                    "accuracy": q["accuracy"]["overall"],
                    "frechet": q["frechet"],
                    "spread": q["spread"],
                }
                for q in points
            ],
        }
        if variant == "learned":
            results[variant]["null_norm"] = float(model.null.detach().norm())
        print(variant, json.dumps(results[variant]["heldout"]), flush=True)
    out = {
        "model": NAME,
        "epochs": args.epochs,
        "cond_null_p": p.cond_null_p,
        "temperature": 1.0,
        "samples_per_caption": args.samples_per_caption,
        "sample_seeds": args.seeds,
        "judge": "models/judge of the committed main job",
        "results": results,
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
