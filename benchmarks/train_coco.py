"""COCO training throughput: the data loader alone against the training step, per model.

Synthetic shards (random JPEGs at --size, 5 captions each, random 512-d embeddings) feed the
real ShardCaptionPairs loader and the real training loop (pipeline.train.train_one_epoch),
so we see which one bounds training. The models are built from the arch of their params.yaml
entries (coco_clip, coco_t5), at --size. Reports pairs/s and peak RSS; on a GPU also bf16
autocast against fp32 and peak GPU memory.

    python benchmarks/train_coco.py                       # CPU, 64x64 images
    python benchmarks/train_coco.py --device cuda --size 224 --batch-size 64
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.config import load_params
from pipeline.data.embeddings import write_embedding_shard
from pipeline.data.pairs import Placement, ShardCaptionPairs
from pipeline.data.shards import write_shards
from pipeline.models.registry import build
from pipeline.train import EpochOptions, train_one_epoch

REPO = Path(__file__).resolve().parents[1]
MODELS = ("coco_clip", "coco_t5")  # entries of params.yaml's models:


def make_data(folder: Path, images: int, size: int) -> tuple[list[Path], Path, int]:
    rng = np.random.default_rng(0)
    samples, ids = [], []
    for image_id in range(images):
        coarse = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        out = io.BytesIO()
        Image.fromarray(coarse).resize((size, size), Image.BICUBIC).save(out, "JPEG", quality=90)
        caption_ids = [image_id * 10 + k for k in range(5)]
        samples.append(
            {
                "__key__": f"{image_id:012d}",
                "jpg": out.getvalue(),
                "json": {"image_id": image_id, "caption_ids": caption_ids},
            }
        )
        ids += [(image_id, c) for c in caption_ids]
    shards = write_shards(iter(samples), folder / "shards", "train", maxcount=100, maxsize=10**9)
    vectors = rng.normal(size=(len(ids), 512)).astype(np.float32)
    write_embedding_shard(
        folder / "emb" / "part-00000.parquet",
        [i for i, _ in ids],
        [c for _, c in ids],
        [""] * len(ids),
        vectors,
        "float16",
        {},
    )
    return shards, folder / "emb", len(ids)


def loader_rate(data: ShardCaptionPairs) -> float:
    start, count = time.perf_counter(), 0
    for x, _ in data.batches(torch.Generator().manual_seed(0)):
        count += len(x)
    return count / (time.perf_counter() - start)


def train_rate(model, data: ShardCaptionPairs, amp: bool) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    options = EpochOptions(grad_clip=1.0, amp=amp)
    train_one_epoch(model, data, optimizer, torch.Generator().manual_seed(0), options)
    if data.device.type == "cuda":
        torch.cuda.synchronize()
    return len(data) / (time.perf_counter() - start)


def coco_model(name: str, size: int, device: torch.device) -> torch.nn.Module:
    """Model ``name`` as its params.yaml entry builds it, for ``size`` images, 512-d captions."""
    entry = load_params(REPO / "params.yaml").model(name)
    sizes = {"image_size": size, "text_dim": 512}
    return build(f"models.{name}.arch", entry.class_name, entry.arch, **sizes).to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/train_coco.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        shards, emb, pairs = make_data(Path(tmp), args.images, args.size)
        data = ShardCaptionPairs(
            shards,
            emb,
            pairs=pairs,
            batch_size=args.batch_size,
            shuffle_buffer=500,
            workers=args.workers,
            placement=Placement(device),
        )
        results["loader_alone_pairs_per_s"] = loader_rate(data)
        for name in MODELS:
            torch.manual_seed(0)
            model = coco_model(name, args.size, device)
            row = {"fp32_pairs_per_s": train_rate(model, data, amp=False)}
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
                model = coco_model(name, args.size, device)
                row["bf16_pairs_per_s"] = train_rate(model, data, amp=True)
                row["bf16_speedup"] = row["bf16_pairs_per_s"] / row["fp32_pairs_per_s"]
                row["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
            row["loader_over_train"] = results["loader_alone_pairs_per_s"] / row["fp32_pairs_per_s"]
            results[name] = row
            print(name, {k: round(v, 2) for k, v in row.items()}, flush=True)
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        "loader alone:",
        round(results["loader_alone_pairs_per_s"]),
        "pairs/s;",
        "peak RSS",
        round(results["peak_rss_mb"]),
        "MB",
    )
    report = {
        "benchmark": "COCO CVAE training, synthetic shards",
        "images": args.images,
        "pairs": pairs,
        "image_size": args.size,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "device": str(device),
        "torch": torch.__version__,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
