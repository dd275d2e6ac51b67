"""Training throughput of the judge CNN on CPU: channels-last (ours) vs the plain NCHW layout.

The judge (pipeline/models/judge.py) and the five CAS classifiers are the largest cost of the
main `dvc repro` on a CPU. Both sides train the same CNN, from the same initial weights, with
the same optimizer, batch size and data order, through the pipeline's own training loop; the
only difference is the memory format of the weights and inputs. The benchmark also checks
that both sides end the epoch with the same weights (to float tolerance).

    python benchmarks/judge_epoch.py                   # 60,000 images, prints and saves JSON
    python benchmarks/judge_epoch.py --limit 10000 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.data.batches import InMemoryBatches
from pipeline.data.fmnist import load_tensors
from pipeline.models.judge import JudgeCNN
from pipeline.train import train_one_epoch

RAW = Path("data/raw/fmnist")


class PlainJudge(JudgeCNN):
    """The same network in the default contiguous NCHW layout: the baseline."""

    def __init__(self, config):
        super().__init__(config)
        self.to(memory_format=torch.contiguous_format)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.reshape(-1, 1, 28, 28))


def timed(cls, x, y, batch_size) -> float:
    """Images/s of one training epoch."""
    torch.manual_seed(0)
    model = cls.of(num_classes=10, feature_dim=128)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    warm = InMemoryBatches(x[:2048], y[:2048], batch_size=batch_size)
    train_one_epoch(model, warm, optimizer, torch.Generator().manual_seed(0))
    batches = InMemoryBatches(x, y, batch_size=batch_size)
    start = time.perf_counter()
    train_one_epoch(model, batches, optimizer, torch.Generator().manual_seed(0))
    return len(x) / (time.perf_counter() - start)


def logit_difference(x: torch.Tensor) -> float:
    """Largest difference of the two layouts' logits, with the same weights, in eval mode."""
    torch.manual_seed(0)
    plain = PlainJudge.of(num_classes=10, feature_dim=128).eval()
    ours = JudgeCNN.of(num_classes=10, feature_dim=128).eval()
    ours.load_state_dict(plain.state_dict())
    with torch.no_grad():
        return float((plain(x) - ours(x)).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/judge_epoch.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x, y = load_tensors(RAW, "train", args.limit)
    sides = {"nchw_baseline": PlainJudge, "channels_last": JudgeCNN}
    runs: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits both sides
        for name, cls in sides.items():
            runs[name].append(timed(cls, x, y, args.batch_size))
    difference = logit_difference(x[:1000])
    median = {name: float(np.median(v)) for name, v in runs.items()}
    result = {
        "benchmark": "one training epoch of the judge CNN, Adam, CPU",
        "images": len(x),
        "batch_size": args.batch_size,
        "threads": args.threads,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "median_images_per_s": median,
        "runs_images_per_s": runs,
        "speedup_vs_nchw": median["channels_last"] / median["nchw_baseline"],
        "max_logit_difference_same_weights": difference,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, value in median.items():
        print(f"{name:>14}: {value:8.0f} images/s")
    print(f"speedup vs NCHW: {result['speedup_vs_nchw']:.2f}x; logits differ by {difference:.1e}")


if __name__ == "__main__":
    main()
