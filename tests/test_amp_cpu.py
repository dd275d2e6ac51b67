"""``amp: true`` trains under bf16 autocast on the CPU too (the CAS classifiers' recipe): the
loop runs on real Fashion-MNIST images, its numbers are finite and learn, and they are not
fp32's (the autocast is on)."""

import gzip
import math

import numpy as np
import torch

from pipeline.data.batches import InMemoryBatches
from pipeline.data.fmnist import LABELS, parse_idx
from pipeline.models.judge import JudgeCNN
from pipeline.train import FitData, fit

from .conftest import fit_run, fit_spec


def _read(folder, name: str, n: int) -> np.ndarray:
    return parse_idx(gzip.decompress((folder / name).read_bytes()), name)[:n]


def _train(folder, amp: bool):
    torch.manual_seed(0)
    x = torch.from_numpy(_read(folder, "train-images-idx3-ubyte.gz", 2048) / 255.0).float()
    x = x.reshape(-1, 784)
    y = torch.from_numpy(_read(folder, "train-labels-idx1-ubyte.gz", 2048).astype(np.int64))
    net = JudgeCNN.of(num_classes=10, feature_dim=16)
    data = FitData(InMemoryBatches(x, y, batch_size=64), InMemoryBatches(x, y, batch_size=256))
    history = fit(net, data, fit_spec(epochs=3, batch_size=64, lr=3e-3, amp=amp), fit_run("amp"))
    return net, history


def test_bf16_autocast_on_the_cpu_trains_finite_and_differs_from_fp32(fmnist_gz_dir):
    fp32, plain = _train(fmnist_gz_dir, False)
    bf16, mixed = _train(fmnist_gz_dir, True)
    for history in (plain, mixed):
        losses = [row["train/loss"] for row in history]
        assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
        assert history[-1]["test/accuracy"] > 0.6  # it learns the classes either way
    weights = zip(fp32.state_dict().values(), bf16.state_dict().values(), strict=True)
    assert any(not torch.equal(a, b) for a, b in weights)  # bf16 arithmetic was used
    assert all(
        v.dtype == torch.float32 for v in bf16.state_dict().values() if v.is_floating_point()
    )


def test_a_bf16_cas_file_agrees_with_itself(fmnist_gz_dir):
    """cas_metrics of a classifier trained under bf16: its overall accuracy is the mean of its
    per-class ones weighted by their counts (one pass), and finite."""
    from pipeline.cas import cas_metrics

    net, history = _train(fmnist_gz_dir, True)
    x = torch.from_numpy(_read(fmnist_gz_dir, "t10k-images-idx3-ubyte.gz", 1000) / 255.0).float()
    y = torch.from_numpy(_read(fmnist_gz_dir, "t10k-labels-idx1-ubyte.gz", 1000).astype(np.int64))
    result = cas_metrics(history, net, (x.reshape(-1, 784), y), {"amp": True})
    counts = torch.bincount(y, minlength=10).float()
    per_class = torch.tensor([result["per_class"][name] for name in LABELS])
    assert math.isfinite(result["accuracy_on_real_test"])
    assert abs(result["accuracy_on_real_test"] - float((per_class * counts).sum() / 1000)) < 1e-6
