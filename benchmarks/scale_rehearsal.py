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
Inception (pipeline/random_inception.py): it resizes every image to 299, so on a CPU it is
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
# Peak memory of this process alone: /proc's VmHWM. (getrusage's ru_maxrss keeps, across the
# exec, the high-water mark of the process that forked it: here the driver's.)
HWM = """
def vm_mb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
"""
# Runs one `t2i` command in this process and reports its peak memory (and its workers').
MEASURED = (
    HWM
    + """
import json, resource, sys, time
from pipeline.cli import app
start = time.perf_counter()
try:
    app(sys.argv[2:])
except SystemExit as exc:
    if exc.code:
        raise
usage = {"seconds": time.perf_counter() - start,
         "peak_rss_mb": vm_mb("VmHWM"),
         "workers_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
open(sys.argv[1], "w").write(json.dumps(usage))
"""
)


def coco_like_caption(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(WORDS, int(rng.integers(8, 19)))).capitalize() + "."


def make_coco_root(root: Path, images: int, jpeg_size: tuple[int, int], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    blobs = [
        encode_jpeg(image.convert("RGB").resize(jpeg_size), 90)
        for image, _ in photo_variants(DISTINCT_JPEGS, seed)
    ]
    (root / "train2014").mkdir(parents=True)
    (root / "annotations").mkdir()
    entries, annotations = [], []
    for i in range(images):
        image_id = i + 1
        name = f"COCO_train2014_{image_id:012d}.jpg"
        (root / "train2014" / name).write_bytes(blobs[i % DISTINCT_JPEGS])
        entries.append(
            {
                "license": 1,
                "file_name": name,
                "coco_url": "",
                "height": jpeg_size[1],
                "width": jpeg_size[0],
                "date_captured": "2013-11-14 16:28:13",
                "flickr_url": "",
                "id": image_id,
            }
        )
        annotations += [
            {"image_id": image_id, "id": image_id * 10 + k, "caption": coco_like_caption(rng)}
            for k in range(5)
        ]
    payload = {
        "info": {"description": "synthetic COCO 2014 captions", "year": 2014},
        "licenses": [{"id": 1, "name": "synthetic", "url": ""}],
        "images": entries,
        "annotations": annotations,
    }
    (root / "annotations" / "captions_train2014.json").write_text(json.dumps(payload))


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
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    result = subprocess.run(
        [sys.executable, "-c", MEASURED, str(report), *command],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
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


EVAL_ONE = (
    HWM
    + """
import json, sys, time
from pathlib import Path
import numpy as np, torch
from pipeline.config import EvaluateCoco
from pipeline.data.embeddings import write_embedding_shard
from pipeline.data.pairs import ShardCaptionPairs
from pipeline.data.shards import write_shards
from pipeline.heldout import evaluate_held_out
from pipeline.models.cvae_clip import CVAEClip
from pipeline.random_inception import save_random_inception
from pipeline.testing.encoders import make_tiny_clip

work, n, size, inception = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(1)
rng = np.random.default_rng(0)
blobs = []
for i in range(64):
    from PIL import Image
    import io
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(out, "JPEG")
    blobs.append(out.getvalue())
samples = ({"__key__": f"{i:012d}", "jpg": blobs[i % 64],
            "json": {"image_id": i, "caption_ids": [i], "captions": [f"caption {i}"]}}
           for i in range(n))
shards = write_shards(samples, work / "shards", "val", maxcount=1000, maxsize=10**9)
write_embedding_shard(work / "emb" / "part-00000.parquet", np.arange(n), np.arange(n),
                      [f"caption {i}" for i in range(n)],
                      rng.normal(size=(n, 16)).astype(np.float32), "float16", {})
weights = str(save_random_inception(work / "inception.pth")) if inception == "1" else None
p = EvaluateCoco(metric_images=n, batch_size=250, kid_subsets=10, inception_weights=weights,
                 clip_score=make_tiny_clip(work / "clip"), device="cpu")
model = CVAEClip.of(image_size=size, text_dim=16, latent_dim=16, width=8, fusion="concat",
                    feature_norm=True, logvar_bound=8.0)
open("/proc/self/clear_refs", "w").write("5")  # VmHWM from here: the evaluation alone
base = vm_mb("VmRSS")
start = time.perf_counter()
batches = ShardCaptionPairs(shards, work / "emb", pairs=0, batch_size=p.batch_size
                            ).first_caption_batches(n, p.batch_size)
between = []  # RSS as each batch arrives: what the stream holds, without transient peaks

def tapped(stream):
    for batch in stream:
        between.append(vm_mb("VmRSS"))
        yield batch

out = evaluate_held_out(model, tapped(batches), p, "evaluate.coco_clip", "coco_clip",
                        torch.device("cpu"), size, 8, torch.Generator().manual_seed(1))
peak = vm_mb("VmHWM")
json.dump({"images": out.images, "seconds": time.perf_counter() - start,
           "rss_before_mb": base, "peak_rss_mb": peak, "growth_mb": peak - base,
           "rss_first_batch_mb": between[0], "rss_last_batch_mb": between[-1],
           "rss_max_between_batches_mb": max(between), "rss_end_mb": vm_mb("VmRSS"),
           "inception": inception == "1",
           "clip_s": out.caption_only["clip_s"]["value"],
           "fid": out.caption_only["fid"]["value"]}, open(work / "eval.json", "w"))
"""
)


def evaluate_at(tmp: Path, images: int, args) -> dict:
    work = tmp / f"evaluate-{images}"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            EVAL_ONE,
            str(work),
            str(images),
            str(args.pack_size),
            "1" if args.eval_inception else "0",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
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


def main() -> None:
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
