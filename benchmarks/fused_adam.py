"""Training throughput on CPU: torch's fused Adam (ours) vs its default per-tensor Adam.

On CPU, ``torch.optim.Adam()`` updates one parameter tensor at a time in Python; the
training loop (pipeline/train.py) asks for ``fused=True``, one kernel over every parameter.
Both sides train the same models from the same initial weights on the same Fashion-MNIST
images, batch size and data order, through the pipeline's own epoch loop. The benchmark also
reports how far apart the two sides' weights are after one step (float rounding only).

    python benchmarks/fused_adam.py                     # 60,000 images, prints and saves JSON
    python benchmarks/fused_adam.py --limit 12800 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import load_params
from pipeline.data.batches import InMemoryBatches
from pipeline.data.fmnist import load_tensors
from pipeline.models.cvae_prior import CVAEPrior
from pipeline.models.registry import build
from pipeline.train import train_one_epoch

REPO = Path(__file__).resolve().parents[1]
RAW = Path("data/raw/fmnist")


def _paper_model() -> torch.nn.Module:
    """fmnist_label as its params.yaml entry builds it (784-400-20, concat)."""
    entry = load_params(REPO / "params.yaml").model("fmnist_label")
    where = "models.fmnist_label.arch"
    return build(where, entry.class_name, entry.arch, input_dim=784, cond_dim=10)


def _judge() -> torch.nn.Module:
    """The judge CNN as params.yaml's judge section builds it (128 features)."""
    arch = {"feature_dim": load_params(REPO / "params.yaml").judge.feature_dim}
    return build("judge", "judge", arch, num_classes=10)


def _learned_prior(width: int, arch: str) -> CVAEPrior:
    """CVAEPrior with a learned prior on one-hot labels, at the sizes of
    benchmarks/results/fused_adam.json (today's fmnist_conv entry: width 32, standard prior)."""
    return CVAEPrior.of(
        cond_dim=10,
        latent_dim=16,
        width=width,
        cond_hidden=128,
        prior="learned",
        fusion="concat",
        cond_noise=0.0,
        cond_dropout=0.0,
        arch=arch,
        likelihood="bernoulli",
        beta=1.0,
    )


MODELS = {  # the main job's models; label-conditioned for speed
    "fmnist_label (MLP CVAE)": (_paper_model, "onehot"),
    "fmnist_text_prior (MLP, learned prior)": (
        lambda: _learned_prior(width=50, arch="mlp"),
        "onehot",
    ),
    "fmnist_conv (conv, learned prior)": (
        lambda: _learned_prior(width=16, arch="conv"),
        "onehot",
    ),
    "judge / CAS CNN": (_judge, "label"),
}


def epoch(make, target, x, fused: bool, batch_size: int) -> tuple[float, torch.nn.Module]:
    torch.manual_seed(0)
    model = make()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)
    batches = InMemoryBatches(x, target, batch_size=batch_size)
    start = time.perf_counter()
    train_one_epoch(model, batches, optimizer, torch.Generator().manual_seed(0))
    return len(x) / (time.perf_counter() - start), model


def one_step_difference(make, target, x) -> float:
    """Largest weight difference of the two optimizers after one identical step."""
    _, a = epoch(make, target[:128], x[:128], False, 128)
    _, b = epoch(make, target[:128], x[:128], True, 128)
    pairs = zip(a.parameters(), b.parameters(), strict=True)
    return max(float((p - q).detach().abs().max()) for p, q in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fused_adam.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x, y = load_tensors(RAW, "train", args.limit)
    targets = {"onehot": F.one_hot(y, 10).float(), "label": y}
    results = {}
    for name, (make, kind) in MODELS.items():
        runs = {"default_per_tensor": [], "fused": []}
        for _ in range(args.repeats):  # interleaved, so drift in machine load hits both sides
            for side, fused in (("default_per_tensor", False), ("fused", True)):
                runs[side].append(epoch(make, targets[kind], x, fused, args.batch_size)[0])
        median = {side: float(np.median(v)) for side, v in runs.items()}
        results[name] = {
            "median_images_per_s": median,
            "runs_images_per_s": runs,
            "speedup": median["fused"] / median["default_per_tensor"],
            "max_weight_difference_after_one_step": one_step_difference(make, targets[kind], x),
        }
        print(
            f"{name:>40}: default {median['default_per_tensor']:7.0f} images/s, fused "
            f"{median['fused']:7.0f} images/s, {results[name]['speedup']:.2f}x"
        )
    out = {
        "benchmark": "one training epoch, Adam default (per-tensor) vs fused, CPU",
        "images": len(x),
        "batch_size": args.batch_size,
        "threads": args.threads,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "models": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
