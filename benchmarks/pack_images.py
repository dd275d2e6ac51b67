"""coco_pack throughput and memory: draft-mode decoding vs a plain open->convert->resize loop.

Synthetic 640x480 photos (COCO's most common size; smooth fields plus noise, JPEG q=90)
are prepared to 224x224 RGB JPEG three ways, on the same files:

- plain, 1 process:   Image.open -> convert("RGB") -> resize -> encode
- draft, 1 process:   the same with Image.draft (libjpeg's DCT-domain downscale) first
- draft, all cores:   pipeline.data.images.prepare_jpegs, as the stage runs it

Then peak memory of the whole pack path (prepare_jpegs -> write_shards) at growing image
counts, each in a fresh process: it must stay flat, since images are streamed.

    python benchmarks/pack_images.py                  # prints and saves JSON
    python benchmarks/pack_images.py --images 200 --memory-counts 200 800
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data.images import encode_jpeg, prepare_image, prepare_jpegs

SIZE, QUALITY = 224, 90


def make_photos(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        coarse = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((640, 480), Image.BICUBIC)
        pixels = np.asarray(image, dtype=np.int16) + rng.integers(-20, 20, (480, 640, 3))
        path = folder / f"{i:06d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def plain(data: bytes) -> bytes:
    image = Image.open(io.BytesIO(data)).convert("RGB").resize((SIZE, SIZE), Image.BICUBIC)
    return encode_jpeg(image, QUALITY)


def draft(data: bytes) -> bytes:
    return encode_jpeg(prepare_image(data, SIZE, "resize", draft=True), QUALITY)


def plain_decode_resize(data: bytes):
    return Image.open(io.BytesIO(data)).convert("RGB").resize((SIZE, SIZE), Image.BICUBIC)


def draft_decode_resize(data: bytes):
    return prepare_image(data, SIZE, "resize", draft=True)


def rate(fn, paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        fn(path.read_bytes())
    return len(paths) / (time.perf_counter() - start)


def pool_rate(paths: list[Path], workers: int) -> float:
    start = time.perf_counter()
    for _ in prepare_jpegs(((str(p), "") for p in paths), SIZE, "resize", QUALITY, workers):
        pass
    return len(paths) / (time.perf_counter() - start)


CHILD = "--memory-child"  # `pack_images.py --memory-child FILES COUNT OUT`: in a fresh process


def pack_memory_child(files: str, count: str, out: str) -> None:
    """Child: pack ``count`` of the JPEGs in ``files`` into shards under ``out``; print this
    process's and its largest worker's peak RSS (KB)."""
    from pipeline.data.shards import write_shards

    paths = sorted(Path(files).glob("*.jpg"))
    chosen = [(str(paths[i % len(paths)]), "") for i in range(int(count))]
    jpegs = prepare_jpegs(iter(chosen), 224, "resize", 90, workers=2)
    samples = ({"__key__": f"{i:012d}", "jpg": j, "json": {"i": i}} for i, j in enumerate(jpegs))
    write_shards(samples, Path(out), "bench", maxcount=1000, maxsize=10**9)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(own, workers)


def peak_memory_mb(files: Path, count: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run(
            [sys.executable, __file__, CHILD, str(files), str(count), out],
            capture_output=True,
            text=True,
            check=True,
        )
    own, workers = (int(v) / 1024 for v in result.stdout.split())
    return {
        "images": count,
        "main_process_mb": round(own, 1),
        "largest_worker_mb": round(workers, 1),
    }


def main() -> None:
    if sys.argv[1:2] == [CHILD]:
        pack_memory_child(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-counts", type=int, nargs="+", default=[300, 1200, 4800])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pack_images.json"))
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_photos(Path(tmp), args.images)
        runs = {
            "plain_1_process": [],
            "draft_1_process": [],
            f"draft_{cores}_processes": [],
            "plain_decode_resize_only": [],
            "draft_decode_resize_only": [],
        }
        for _ in range(args.repeats):  # interleaved, so drift in machine load hits every side
            runs["plain_1_process"].append(rate(plain, paths))
            runs["draft_1_process"].append(rate(draft, paths))
            runs[f"draft_{cores}_processes"].append(pool_rate(paths, cores))
            runs["plain_decode_resize_only"].append(rate(plain_decode_resize, paths))
            runs["draft_decode_resize_only"].append(rate(draft_decode_resize, paths))
        memory = [peak_memory_mb(Path(tmp), n) for n in args.memory_counts]
    median = {name: float(np.median(v)) for name, v in runs.items()}
    base = median["plain_1_process"]
    decode_ratio = median["draft_decode_resize_only"] / median["plain_decode_resize_only"]
    result = {
        "benchmark": "640x480 JPEG -> 224x224 RGB JPEG q90",
        "images": args.images,
        "cpu_cores": cores,
        "median_images_per_s": median,
        "runs_images_per_s": runs,
        "speedup_vs_plain": {name: value / base for name, value in median.items()},
        "decode_resize_only_speedup": decode_ratio,
        "peak_memory": memory,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, value in median.items():
        print(f"{name:>22}: {value:7.0f} images/s  ({value / base:.2f}x plain)")
    print(f"decode+resize alone: draft is {decode_ratio:.2f}x plain")
    for row in memory:
        print(
            f"{row['images']:>6} images: main {row['main_process_mb']} MB, "
            f"largest worker {row['largest_worker_mb']} MB"
        )


if __name__ == "__main__":
    main()
