"""The COCO path at the paper's §2.2 size on a CPU: wall time and peak memory per stage.

Pipeline (scale_pipeline.json): for each --sizes N it writes, in a temporary folder, a local
COCO root with a synthetic annotations/captions_train2014.json in the official schema (N
images, five COCO-like captions each: 82,783 images give 413,915 captions, as train2014's
414,113) and N small JPEGs (--jpeg-size, 64x48), then runs the real stages through `t2i`
in a fresh process each: coco_download (source: local, every image), coco_pack (at
--pack-size) and embed with a tiny random-weight CLIP (the encoder's own speed is measured by
benchmarks/embed_captions.py; this is about the pipeline around it). Peak memory is the
stage process's own high-water RSS (VmHWM); its pool workers' max RSS separately
(fork-shared pages counted in each).

Evaluation (scale_evaluate.json): for each --eval-sizes N held-out images (FID-30K: 30,000)
it runs pipeline/heldout.py's streamed evaluation in a fresh process on N images at
--pack-size with a small CVAE and tiny CLIP scorer. --eval-inception adds the random-weight
Inception (pipeline/testing/inception.py): it resizes every image to 299, so on a CPU it is
slow; its per-image memory is the 2 x 2048 float32 features it keeps (16 KB).

    python benchmarks/scale_rehearsal.py                       # 7k, 20k, 83k; 1k, 5k, 30k
    python benchmarks/scale_rehearsal.py --sizes 2000 --eval-sizes 500   # a quick look

Everything is written under one temporary folder, removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from pipeline.atomic import write_json
from pipeline.data.images import encode_jpeg
from pipeline.testing.coco import FakeImage, write_coco_root
from pipeline.testing.encoders import make_tiny_clip
from pipeline.testing.photos import photo_variants

REPO = Path(__file__).resolve().parents[1]
VOCABULARY = (
    "a man woman child dog cat bus train plate of food table kitchen street city park bench "
    "sitting standing riding next to on top with in front the large small red white green "
    "two three people group skateboard surfboard wave beach snow field tennis pizza giraffe"
)
WORDS = VOCABULARY.split()  # noqa: SIM905 (a sentence reads better than a 46-item list)
DISTINCT_JPEGS = 256  # the N files cycle through these (every file still decodes in full)
CHILD = (
    "--child"  # `scale_rehearsal.py --child NAME ARGS...`: one measured step, in a fresh process
)


def vm_mb(key: str) -> float:
    """This process's /proc/self/status ``key`` (VmHWM, VmRSS) in MB. VmHWM is the peak memory
    of this process alone: getrusage's ru_maxrss keeps, across the exec, the high-water mark
    of the process that forked it (here the driver's)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def child(name: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run CHILDREN[name](*args) in a fresh Python process, with this checkout importable."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, __file__, CHILD, name, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
    )


def measure_command(report: str, *command: str) -> None:
    """Child: run one `t2i` command in this process; write its time and peak memory (and its
    pool workers') to ``report``."""
    from stages.cli import app

    start = time.perf_counter()
    try:
        app(list(command))
    except SystemExit as exc:
        if exc.code:
            raise
    usage = {
        "seconds": time.perf_counter() - start,
        "peak_rss_mb": vm_mb("VmHWM"),
        "workers_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    Path(report).write_text(json.dumps(usage))


def coco_like_caption(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(WORDS, int(rng.integers(8, 19)))).capitalize() + "."


def make_coco_root(root: Path, images: int, jpeg_size: tuple[int, int], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    blobs = [
        encode_jpeg(image.convert("RGB").resize(jpeg_size), 90)
        for image, _ in photo_variants(DISTINCT_JPEGS, seed)
    ]
    items = (
        FakeImage(
            image_id=i + 1,
            jpeg=blobs[i % DISTINCT_JPEGS],
            width=jpeg_size[0],
            height=jpeg_size[1],
            captions=[coco_like_caption(rng) for _ in range(5)],
        )
        for i in range(images)
    )
    write_coco_root(root, {"train2014": items}, description="synthetic COCO 2014 captions")


def write_params(work: Path, root: Path, clip: dict, pack_size: int) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["download"]["coco"].update(
        source="local",
        local_root=str(root),
        subsets={"train": {"split": "train2014", "num_images": None, "seed": 0}},
    )
    params["pack"]["coco"].update(image_size=pack_size)
    params["embed"].update(device="cpu")
    params["embed"]["clip-vit-b-32"] = {**params["embed"]["clip-vit-b-32"], **clip}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def measured(work: Path, *command: str) -> dict:
    report = work / "usage.json"
    result = child("measure", str(report), *command, cwd=work)
    if result.returncode:
        raise SystemExit(f"t2i {' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return json.loads(report.read_text())


STAGES = {
    "coco_download": ("download", "coco"),
    "coco_pack": ("pack", "coco"),
    "embed": ("embed", "clip-vit-b-32", "coco"),
}


def pipeline_at(tmp: Path, images: int, args, head: str) -> dict:
    work = tmp / f"pipeline-{images}"
    root = work / "coco-root"
    start = time.perf_counter()
    make_coco_root(root, images, tuple(args.jpeg_size))
    row = {
        "images": images,
        "captions": images * 5,
        "make_root_s": time.perf_counter() - start,
        "annotations_mb": (root / "annotations" / "captions_train2014.json").stat().st_size / 2**20,
    }
    write_params(work, root, make_tiny_clip(work / "clip"), args.pack_size)
    for stage, command in STAGES.items():
        if stage not in args.stages:
            continue
        row[stage] = {**measured(work, *command), "code": head}
        print(images, stage, row[stage], flush=True)
    return row


def evaluate_one(work: str, n: str, size: str, inception: str) -> None:
    """Child: pipeline/heldout.py's streamed evaluation of ``n`` random images at ``size``;
    writes work/eval.json with its time and memory."""
    import torch
    from PIL import Image

    from pipeline.config import EvaluateCoco, load_params
    from pipeline.data.embeddings import write_embedding_shard
    from pipeline.data.pairs import ShardCaptionPairs
    from pipeline.data.shards import write_shards
    from pipeline.heldout import evaluate_held_out
    from pipeline.models.cvae_clip import CVAEClip
    from pipeline.testing.encoders import make_tiny_clip
    from pipeline.testing.inception import save_random_inception

    work, n, size, with_inception = Path(work), int(n), int(size), inception == "1"
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    blobs = [
        encode_jpeg(Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)), 75)
        for _ in range(64)
    ]
    samples = (
        {
            "__key__": f"{i:012d}",
            "jpg": blobs[i % 64],
            "json": {"image_id": i, "caption_ids": [i], "captions": [f"caption {i}"]},
        }
        for i in range(n)
    )
    shards = write_shards(samples, work / "shards", "val", maxcount=1000, maxsize=10**9)
    write_embedding_shard(
        work / "emb" / "part-00000.parquet",
        np.arange(n),
        np.arange(n),
        [f"caption {i}" for i in range(n)],
        rng.normal(size=(n, 16)).astype(np.float32),
        "float16",
        {},
    )
    weights = str(save_random_inception(work / "inception.pth")) if with_inception else None
    entry = load_params(REPO / "params.yaml").model("coco_clip").evaluate
    raw = entry.model_dump()
    raw["clip_score"] |= make_tiny_clip(work / "clip")
    raw |= {"metric_images": n, "batch_size": 250, "kid_subsets": 10, "device": "cpu"}
    p = EvaluateCoco.model_validate({**raw, "inception_weights": weights})
    model = CVAEClip.of(
        image_size=size,
        text_dim=16,
        latent_dim=16,
        width=8,
        fusion="concat",
        feature_norm=True,
        logvar_bound=8.0,
    )
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here: the evaluation alone
    base = vm_mb("VmRSS")
    start = time.perf_counter()
    pairs = ShardCaptionPairs(shards, work / "emb", pairs=0, batch_size=p.batch_size)
    between = []  # RSS as each batch arrives: what the stream holds, without transient peaks

    def tapped(stream):
        for batch in stream:
            between.append(vm_mb("VmRSS"))
            yield batch

    batches = tapped(pairs.first_caption_batches(n, p.batch_size))
    generator = torch.Generator().manual_seed(1)
    device = torch.device("cpu")
    out = evaluate_held_out(model, batches, p, "coco_clip", device, generator)
    peak = vm_mb("VmHWM")
    row = {
        "images": out.images,
        "seconds": time.perf_counter() - start,
        "rss_before_mb": base,
        "peak_rss_mb": peak,
        "growth_mb": peak - base,
        "rss_first_batch_mb": between[0],
        "rss_last_batch_mb": between[-1],
        "rss_max_between_batches_mb": max(between),
        "rss_end_mb": vm_mb("VmRSS"),
        "inception": with_inception,
        "clip_s": out.caption_only["clip_s"]["value"],
        "fid": out.caption_only["fid"]["value"],
    }
    (work / "eval.json").write_text(json.dumps(row))


def evaluate_at(tmp: Path, images: int, args) -> dict:
    work = tmp / f"evaluate-{images}"
    work.mkdir()
    inception = "1" if args.eval_inception else "0"
    result = child("evaluate", str(work), str(images), str(args.pack_size), inception)
    if result.returncode:
        raise SystemExit(f"evaluation of {images} images failed:\n{result.stderr[-3000:]}")
    row = json.loads((work / "eval.json").read_text())
    print(
        "evaluate",
        {k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items()},
        flush=True,
    )
    return row


def merged(rows: list[dict], earlier: Path) -> list[dict]:
    """``rows`` with the stages they lack taken from an earlier run's rows of the same size."""
    if not earlier.is_file():
        return rows
    before = {r["images"]: r for r in json.loads(earlier.read_text())["rows"]}
    return [{**before.get(r["images"], {}), **r} for r in rows]


CHILDREN = {"measure": measure_command, "evaluate": evaluate_one}


def main() -> None:
    if sys.argv[1:2] == [CHILD]:
        CHILDREN[sys.argv[2]](*sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[7000, 20000, 82783])
    parser.add_argument("--eval-sizes", type=int, nargs="*", default=[1000, 5000, 30000])
    parser.add_argument("--jpeg-size", type=int, nargs=2, default=[64, 48])
    parser.add_argument("--pack-size", type=int, default=32)
    parser.add_argument("--eval-inception", action="store_true")
    parser.add_argument(
        "--stages",
        nargs="+",
        default=list(STAGES),
        choices=list(STAGES),
        help="a first part of the pipeline: the others need its outputs; the "
        "stages not run keep their rows of an earlier scale_pipeline.json",
    )
    parser.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    machine = {
        "cpu_cores": len(os.sched_getaffinity(0)),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "load_average": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="scale-rehearsal-") as tmp:
        if args.sizes:
            head = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True, capture_output=True
            ).stdout.strip()
            rows = merged(
                [pipeline_at(Path(tmp), n, args, head) for n in args.sizes],
                args.out_dir / "scale_pipeline.json",
            )
            write_json(
                args.out_dir / "scale_pipeline.json",
                {
                    "benchmark": "coco_download (local) -> coco_pack -> embed (tiny CLIP), real "
                    "stages, synthetic COCO root",
                    "jpeg_size": args.jpeg_size,
                    "pack_size": args.pack_size,
                    "machine": machine,
                    "rows": rows,
                },
            )
        if args.eval_sizes:
            rows = [evaluate_at(Path(tmp), n, args) for n in args.eval_sizes]
            write_json(
                args.out_dir / "scale_evaluate.json",
                {
                    "benchmark": "streamed held-out evaluation (pipeline/heldout.py)",
                    "image_size": args.pack_size,
                    "inception": args.eval_inception,
                    "machine": machine,
                    "rows": rows,
                },
            )
    print(
        "peak RSS of this driver:",
        round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "MB",
    )


if __name__ == "__main__":
    main()
