"""Training throughput of the §2.1 CVAE on CPU: our in-memory batches vs a plain DataLoader.

Both sides train the same model, with the same optimizer and batch size, on the same
Fashion-MNIST tensors, for one epoch each (after a short warm-up). The baseline is the
textbook loop: ``DataLoader(TensorDataset(x, c), shuffle=True)``, which indexes and
collates one sample at a time.

    python benchmarks/train_epoch.py                  # 60,000 images, prints and saves JSON
    python benchmarks/train_epoch.py --limit 10000 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from pipeline.data.fmnist import load_tensors
from pipeline.models.cvae_mlp import CVAEMLP
from pipeline.train import InMemoryBatches, train_one_epoch

RAW = Path("data/raw/fmnist")


def plain_epoch(model, x, c, batch_size, generator) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    loader = DataLoader(
        TensorDataset(x, c), batch_size=batch_size, shuffle=True, generator=generator
    )
    for xb, cb in loader:
        loss = model.batch_losses(xb, cb)["loss"] / len(xb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def ours_epoch(model, x, c, batch_size, generator) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_one_epoch(model, InMemoryBatches(x, c, batch_size=batch_size), optimizer, generator)


def timed(fn, x, c, batch_size) -> float:
    torch.manual_seed(0)
    model = CVAEMLP()
    fn(model, x[:2048], c[:2048], batch_size, torch.Generator().manual_seed(0))  # warm-up
    start = time.perf_counter()
    fn(model, x, c, batch_size, torch.Generator().manual_seed(0))
    return len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/train_epoch.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x, y = load_tensors(RAW, "train", args.limit)
    c = F.one_hot(y, 10).float()
    runs = {"plain_dataloader": [], "in_memory_batches": []}
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits both sides
        runs["plain_dataloader"].append(timed(plain_epoch, x, c, args.batch_size))
        runs["in_memory_batches"].append(timed(ours_epoch, x, c, args.batch_size))
    best = {name: max(values) for name, values in runs.items()}
    result = {
        "benchmark": "one training epoch, CVAE-MLP 784-400-20, Adam, CPU",
        "images": len(x), "batch_size": args.batch_size, "threads": args.threads,
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
        "images_per_s": best, "runs_images_per_s": runs,
        "speedup": best["in_memory_batches"] / best["plain_dataloader"],
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, value in best.items():
        print(f"{name:>20}: {value:9.0f} images/s")
    print(f"{'speedup':>20}: {result['speedup']:9.2f}x")


if __name__ == "__main__":
    main()
