"""Training throughput of the §2.1 CVAE on CPU: our in-memory batches vs plain DataLoaders.

All sides train the same model, with the same optimizer and batch size, on the same
Fashion-MNIST images, for one epoch each (after a short warm-up). Two plain baselines:

- ``tensor_dataloader``: ``DataLoader(TensorDataset(x, c), shuffle=True)``, which indexes and
  collates one sample at a time;
- ``pil_dataloader``: the tutorial loop, a Dataset that turns each uint8 image into a PIL
  image and then a tensor per sample (as torchvision's FashionMNIST + ToTensor does).

    python benchmarks/train_epoch.py                  # 60,000 images, prints and saves JSON
    python benchmarks/train_epoch.py --limit 10000 --threads 1
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
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset

from pipeline.data.batches import InMemoryBatches
from pipeline.data.fmnist import load_tensors
from pipeline.models.cvae_mlp import CVAEMLP
from pipeline.train import train_one_epoch

RAW = Path("data/raw/fmnist")


class PilDataset(Dataset):
    """Per-sample decoding, as in torchvision.datasets.FashionMNIST(transform=ToTensor())."""

    def __init__(self, x: torch.Tensor, c: torch.Tensor):
        self.images = (x * 255).round().to(torch.uint8).reshape(-1, 28, 28).numpy()
        self.c = c

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        image = Image.fromarray(self.images[i], mode="L")
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
        return pixels.reshape(-1), self.c[i]


def loader_epoch(model, dataset, batch_size, generator) -> None:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)
    if model is None:  # the loader alone
        for _ in loader:
            pass
        return
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for xb, cb in loader:
        loss = model.batch_losses(xb, cb)["loss"] / len(xb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def pil_dataloader(model, x, c, batch_size, generator) -> None:
    loader_epoch(model, PilDataset(x, c), batch_size, generator)


def tensor_dataloader(model, x, c, batch_size, generator) -> None:
    loader_epoch(model, TensorDataset(x, c), batch_size, generator)


def in_memory_batches(model, x, c, batch_size, generator) -> None:
    batches = InMemoryBatches(x, c, batch_size=batch_size)
    if model is None:
        for _ in batches.batches(generator):
            pass
        return
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_one_epoch(model, batches, optimizer, generator)


SIDES = {f.__name__: f for f in (pil_dataloader, tensor_dataloader, in_memory_batches)}


def timed(epoch, x, c, batch_size, train: bool) -> float:
    """Images/s of one epoch: a training epoch, or (train=False) only iterating the data."""
    torch.manual_seed(0)
    model = (
        CVAEMLP.of(input_dim=784, cond_dim=10, hidden_dim=400, latent_dim=20, fusion="concat")
        if train
        else None
    )
    epoch(model, x[:2048], c[:2048], batch_size, torch.Generator().manual_seed(0))  # warm-up
    start = time.perf_counter()
    epoch(model, x, c, batch_size, torch.Generator().manual_seed(0))
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
    runs = {kind: {name: [] for name in SIDES} for kind in ("train_epoch", "data_only")}
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits every side
        for name, epoch in SIDES.items():
            runs["train_epoch"][name].append(timed(epoch, x, c, args.batch_size, train=True))
            runs["data_only"][name].append(timed(epoch, x, c, args.batch_size, train=False))
    median = {
        kind: {name: float(np.median(v)) for name, v in sides.items()}
        for kind, sides in runs.items()
    }
    best = median["train_epoch"]
    ours = best["in_memory_batches"]
    result = {
        "benchmark": "one training epoch, CVAE-MLP 784-400-20, Adam, CPU",
        "images": len(x),
        "batch_size": args.batch_size,
        "threads": args.threads,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "median_images_per_s": median,
        "runs_images_per_s": runs,
        "speedup_vs": {name: ours / best[name] for name in SIDES if name != "in_memory_batches"},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for kind, sides in median.items():
        for name, value in sides.items():
            print(f"{kind:>11} {name:>28}: {value:8.0f} images/s")
    for name, ratio in result["speedup_vs"].items():
        print(f"{'speedup vs ' + name:>28}: {ratio:6.2f}x")


if __name__ == "__main__":
    main()
