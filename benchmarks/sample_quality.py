"""FID + KID of caption-only samples: one Inception pass shared by both vs each metric's own.

The plain baseline is torchmetrics' documented use: a FrechetInceptionDistance and a
KernelInceptionDistance, each built with its own InceptionV3 and fed the real and generated
uint8 images, so every image goes through Inception twice. The evaluate stage
(pipeline/sample_quality.py) extracts the features once and gives both metrics the same
features. The numbers must agree; the time should roughly halve.

No pretrained Inception weights exist on this machine: the network is torch-fidelity's
InceptionV3 at its real size with random weights (pipeline/testing/inception.py); speed does not
depend on the weight values.

    python benchmarks/sample_quality.py                  # CPU, prints and saves JSON
    python benchmarks/sample_quality.py --device cuda --images 2000 --size 224
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3
from torchmetrics.image.kid import KernelInceptionDistance

from pipeline.sample_quality import fid_kid, inception_features, load_inception
from pipeline.testing.inception import save_random_inception


def plain(weights: str, real, fake, batch: int, subsets: int, size: int, device) -> dict:
    net = NoTrainInceptionV3(
        name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=weights
    )
    fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=weights)
    kid = KernelInceptionDistance(feature=net, subsets=subsets, subset_size=size)
    fid, kid = fid.to(device), kid.to(device)
    for metric in (fid, kid):
        for images, is_real in ((real, True), (fake, False)):
            for i in range(0, len(images), batch):
                metric.update(images[i : i + batch].to(device), real=is_real)
    torch.manual_seed(0)
    kid_mean, _ = kid.compute()
    return {"fid": float(fid.compute()), "kid_mean": float(kid_mean)}


def shared(weights: str, real, fake, batch: int, subsets: int, size: int, device) -> dict:
    net = load_inception(weights, "weights", device)
    real_f = inception_features(net, real, batch, device)
    fake_f = inception_features(net, fake, batch, device)
    return fid_kid(real_f, fake_f, kid_subsets=subsets, kid_subset_size=size, seed=0)


def timed(fn, *args) -> tuple[float, dict]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="real images, and as many samples")
    parser.add_argument("--size", type=int, default=32, help="image side before Inception's 299")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sample_quality.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    shape = (args.images, 3, args.size, args.size)
    real = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    fake = torch.randint(0, 200, shape, generator=g, dtype=torch.uint8)
    subsets, subset_size = 20, args.images // 2
    with tempfile.TemporaryDirectory() as tmp:
        weights = str(save_random_inception(Path(tmp) / "inception.pth"))
        run = (weights, real, fake, args.batch_size, subsets, subset_size, device)
        shared(weights, real[:2], fake[:2], 2, 1, 2, device)  # warm-up
        plain_s, plain_out = timed(plain, *run)
        shared_s, shared_out = timed(shared, *run)
    report = {
        "benchmark": "FID + KID: features shared by both metrics vs each metric's own Inception",
        "images_each_side": args.images,
        "image_size": args.size,
        "batch_size": args.batch_size,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "plain_s": plain_s,
        "shared_s": shared_s,
        "speedup": plain_s / shared_s,
        "fid_plain": plain_out["fid"],
        "fid_shared": shared_out["fid"],
        "fid_rel_diff": abs(plain_out["fid"] - shared_out["fid"]) / abs(plain_out["fid"]),
        "kid_plain": plain_out["kid_mean"],
        "kid_shared": shared_out["kid_mean"],
    }
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
