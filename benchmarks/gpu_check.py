"""Every GPU measurement this project owes, in one command: under 8 minutes on one H100.

    python benchmarks/gpu_check.py                  # CUDA; writes benchmarks/results/gpu_*.json
    python benchmarks/gpu_check.py --smoke --out-dir /tmp/smoke   # the same code, CPU, seconds

It builds, in a temporary folder, WebDataset shards at 224 of crops, flips and scales of
scikit-image's photographs (pipeline/testing/photos.py), five captions each, and their
embedding caches from CLIP ViT-B/32 and T5-small at their real sizes with random weights
(pipeline/testing/encoders.py; speed does not depend on the weight values). Then, through the
real code (registry builds of the models' params.yaml entries, ShardCaptionPairs /
ResidentCaptionPairs, train_one_epoch, fit):

gpu_embed.json      captions/s of each encoder's fast path at batch 1024 under fp32, bf16 and
                    fp16 autocast, with the max abs difference from fp32 (embed.precision)
gpu_train.json      pairs/s and peak GPU memory of coco_clip and coco_t5 at batch 64 and 256
                    x fp32 / bf16 autocast x channels_last off / on, compile off; compile on
                    at bf16 + channels_last (``--full-grid``: every combination, slower);
                    the loader alone (pairs/s, all cores); GPU-resident uint8 images
                    (models.<model>.train.resident_images) decoded by nvJPEG and by PIL, and
                    batch 1024 on them. Every rate also as a ratio to fp32 / plain / same batch.
gpu_stability.json  --stability-steps optimizer steps of each model in bf16 through fit() at
                    the arch and train values of its params.yaml entry; every loss must be
                    finite.

Each file names the device, torch / CUDA / cuDNN versions and the settings. On the CPU
(``--smoke``) autocast, channels_last and compile do not apply (the stage enables them on
CUDA only), so those rows are left out: the smoke run checks that the code runs, not speed,
and its peak memory is the process's RSS.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import resource
import sys
import tempfile
import time
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from pipeline.atomic import write_json
from pipeline.config import Embed, load_params
from pipeline.data.embeddings import write_embedding_shard
from pipeline.data.images import encode_jpeg
from pipeline.data.pairs import Placement, ShardCaptionPairs
from pipeline.data.resident import ResidentCaptionPairs
from pipeline.data.shards import write_shards
from pipeline.encoders import load_encoder
from pipeline.models.registry import build
from pipeline.testing.encoders import (
    make_random_clip,
    make_random_t5_small,
    make_tiny_clip,
    make_tiny_t5,
)
from pipeline.testing.photos import TEMPLATES, photo_variants
from pipeline.train import EpochOptions, FitData, FitRun, fit, train_one_epoch

REPO = Path(__file__).resolve().parents[1]
MODELS = ("coco_clip", "coco_t5")  # entries of params.yaml's models:


@cache
def params():
    """This checkout's params.yaml, validated whole."""
    return load_params(REPO / "params.yaml")


def encoder_of(name: str) -> str:
    """The encoder whose caption embeddings model ``name`` is conditioned on."""
    return params().model(name).conditioning


def encoder_params(name: str, section: dict):
    """params.yaml's ``embed.<name>``, with the keys of ``section`` in place of its own."""
    raw = params().embed.model_dump(by_alias=True)
    raw[name] = {**raw[name], **section}
    return Embed.model_validate(raw).encoder(name)


class Steps:
    """``steps`` full batches of ``data``, over as many epochs as that takes (a Batches)."""

    def __init__(self, data, steps: int):
        self.data, self.steps, self.batch_size = data, steps, data.batch_size

    def __len__(self) -> int:
        return self.steps * self.batch_size

    def batches(self, generator: torch.Generator | None = None):
        done = 0
        while done < self.steps:
            for batch in self.data.batches(generator):
                if len(batch[0]) < self.batch_size:
                    continue  # a short last batch would make compile trace a second shape
                yield batch
                done += 1
                if done == self.steps:
                    return


def environment(device: torch.device, smoke: bool) -> dict:
    cuda = device.type == "cuda"
    try:
        vision = version("torchvision")
    except PackageNotFoundError:
        vision = None
    return {
        "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
        "device_type": device.type,
        "smoke": smoke,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "torchvision": vision,
        "cpu_cores": len(os.sched_getaffinity(0)),
        "python": sys.version.split()[0],
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_shards(folder: Path, images: int, size: int) -> tuple[list[Path], list[tuple]]:
    """Photo-like JPEGs at ``size`` in shards; returns them and (image, caption id, caption)."""
    samples, rows = [], []
    for image_id, (image, text) in enumerate(photo_variants(images, seed=0)):
        ids = [image_id * 5 + k for k in range(5)]
        captions = [t.format(text) + f" number {image_id}" for t in TEMPLATES]
        jpeg = encode_jpeg(image.convert("RGB").resize((size, size)), 90)
        samples.append(
            {
                "__key__": f"{image_id:012d}",
                "jpg": jpeg,
                "json": {"image_id": image_id, "caption_ids": ids, "captions": captions},
            }
        )
        rows += [(image_id, c, t) for c, t in zip(ids, captions, strict=True)]
    maxcount = max(1, images // 32)  # enough shards for every loader worker
    return write_shards(
        iter(samples), folder / "shards", "train", maxcount=maxcount, maxsize=10**9
    ), rows


def embed_and_cache(
    folder: Path, rows: list[tuple], smoke: bool, device: torch.device, batch_size: int
) -> dict:
    """Captions/s per encoder and precision; writes each encoder's cache (bf16, as the stage)."""
    make = {
        "clip-vit-b-32": make_tiny_clip if smoke else make_random_clip,
        "t5-small": make_tiny_t5 if smoke else make_random_t5_small,
    }
    captions = [r[2] for r in rows]
    results = {}
    for name, make_weights in make.items():
        section = make_weights(folder / "weights" / name)
        encoder = load_encoder(name, encoder_params(name, section), device)
        out, rates = {}, {}
        for precision in ("fp32", "bf16", "fp16"):
            encoder.precision = precision
            encoder.encode(captions[:batch_size], batch_size)  # warm-up
            sync(device)
            start = time.perf_counter()
            out[precision] = encoder.encode(captions, batch_size)
            sync(device)
            rates[precision] = len(captions) / (time.perf_counter() - start)
        results[name] = {
            p: {
                "captions_per_s": rates[p],
                "speedup_vs_fp32": rates[p] / rates["fp32"],
                "max_abs_diff_vs_fp32": float(np.abs(out[p] - out["fp32"]).max()),
                "max_abs_fp32": float(np.abs(out["fp32"]).max()),
            }
            for p in rates
        }
        results[name]["dim"] = encoder.info.dim
        write_embedding_shard(
            folder / "emb" / name / "part-00000.parquet",
            [r[0] for r in rows],
            [r[1] for r in rows],
            captions,
            out["bf16"],
            "float16",
            {},
        )
        print(f"embed {name}: " + ", ".join(f"{p} {rates[p]:.0f}/s" for p in rates), flush=True)
        del encoder
    return results


def timed_steps(model, data, steps: int, warmup: int, amp: bool, device) -> float:
    """Pairs/s of ``steps`` training steps after ``warmup`` ones (compile happens there)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    generator, options = torch.Generator().manual_seed(0), EpochOptions(grad_clip=1.0, amp=amp)
    train_one_epoch(model, Steps(data, warmup), optimizer, generator, options)
    sync(device)
    start = time.perf_counter()
    train_one_epoch(model, Steps(data, steps), optimizer, generator, options)
    sync(device)
    return steps * data.batch_size / (time.perf_counter() - start)


def model_arch(name: str, smoke: bool) -> dict:
    """The arch of the model's params.yaml entry; with --smoke, narrow layers so a CPU runs
    them quickly."""
    arch = dict(params().model(name).arch)
    if smoke:
        arch.update(latent_dim=16, **({"width": 8} if "width" in arch else {}))
    return arch


def build_model(args, name: str, text_dim: int, device, channels_last: bool, compile_: bool):
    torch.manual_seed(0)
    entry, arch = params().model(name), model_arch(name, args.smoke)
    sizes = {"image_size": args.size, "text_dim": text_dim}
    model = build(f"models.{name}.arch", entry.class_name, arch, **sizes).to(device)
    if channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if compile_ and device.type == "cuda":
        model.compile()  # as stages/train_coco.py does
    return model


def train_grid(args, folder: Path, shards: list[Path], pairs: int, device) -> dict:
    cuda = device.type == "cuda"
    workers = max(1, len(os.sched_getaffinity(0)) - 1) if cuda else 0
    streamed = {}

    def data(name: str, batch: int, channels_last: bool) -> ShardCaptionPairs:
        return ShardCaptionPairs(
            shards,
            folder / "emb" / encoder_of(name),
            pairs=pairs,
            batch_size=batch,
            shuffle_buffer=2000,
            workers=workers,
            placement=Placement(device, channels_last and cuda),
        )

    loader = data("coco_clip", max(args.batches), False)
    start, count = time.perf_counter(), 0
    for x, _ in Steps(loader, args.steps).batches(torch.Generator().manual_seed(0)):
        count += len(x)
    sync(device)
    streamed["loader_alone"] = {
        "pairs_per_s": count / (time.perf_counter() - start),
        "workers": workers,
        "batch_size": loader.batch_size,
    }
    rows = []
    grid = itertools.product(MODELS, args.batches, (False, True), (False, True), (False, True))
    for name, batch, amp, channels_last, compile_ in grid:
        if compile_ and not args.full_grid and not (amp and channels_last):
            continue
        if (compile_ or amp or channels_last) and not cuda:
            continue  # the stage applies them on CUDA only (and inductor on a CPU takes minutes)
        d = data(name, batch, channels_last)
        reset_peak(device)
        model = build_model(args, name, d.text_dim, device, channels_last, compile_)
        rate = timed_steps(model, d, args.steps, args.warmup, amp and cuda, device)
        rows.append(
            {
                "model": name,
                "batch_size": batch,
                "amp_bf16": amp,
                "channels_last": channels_last,
                "compile": compile_,
                "data": "streamed",
                "pairs_per_s": rate,
                "peak_memory_mb": peak_mb(device),
            }
        )
        print(f"train {rows[-1]}", flush=True)
        del model
    for name, batch in itertools.product(MODELS, [*args.batches, args.large_batch]):
        for gpu_decode in (True, False) if batch == max(args.batches) else (True,):
            start = time.perf_counter()
            d = ResidentCaptionPairs(
                shards,
                folder / "emb" / encoder_of(name),
                images=args.images,
                batch_size=batch,
                placement=Placement(device, channels_last=cuda),
                gpu_decode=gpu_decode,
            )
            sync(device)
            load_s = time.perf_counter() - start
            reset_peak(device)
            model = build_model(args, name, d.text_dim, device, True, False)
            rate = timed_steps(model, d, args.steps, args.warmup, cuda, device)
            rows.append(
                {
                    "model": name,
                    "batch_size": batch,
                    "amp_bf16": True,
                    "channels_last": True,
                    "compile": False,
                    "data": "resident",
                    "decoder": "nvjpeg" if d.gpu_decoded else "pil",
                    "load_s": load_s,
                    "pairs_per_s": rate,
                    "peak_memory_mb": peak_mb(device),
                }
            )
            print(f"train {rows[-1]}", flush=True)
            del model, d
    for row in rows:  # ratios to the plain setting: fp32, no channels_last, no compile, streamed
        same = [
            r for r in rows if (r["model"], r["batch_size"]) == (row["model"], row["batch_size"])
        ]
        base = [r for r in same if not (r["amp_bf16"] or r["channels_last"] or r["compile"])]
        if base:
            row["speedup_vs_plain"] = row["pairs_per_s"] / base[0]["pairs_per_s"]
        row["train_over_loader"] = row["pairs_per_s"] / streamed["loader_alone"]["pairs_per_s"]
    return {**streamed, "rows": rows}


def stability(args, folder: Path, shards: list[Path], pairs: int, device) -> dict:
    out = {}
    cuda = device.type == "cuda"
    for name in MODELS:
        p = params().model(name).train
        stream = ShardCaptionPairs(
            shards,
            folder / "emb" / encoder_of(name),
            pairs=pairs,
            batch_size=p.batch_size,
            workers=0 if device.type == "cpu" else 4,
            placement=Placement(device, channels_last=cuda),
        )
        model = build_model(args, name, stream.text_dim, device, True, False)
        # one "epoch" of --stability-steps steps, no kept epochs, bf16 where it applies
        spec = p.model_copy(update={"epochs": 1, "keep_epochs": [], "amp": cuda})
        run = FitRun(
            name,
            torch.Generator().manual_seed(0),
            name,
            state_path=folder / name / "state.safetensors",
            live_dir=folder / name / "live",
        )
        start = time.perf_counter()
        data = FitData(Steps(stream, args.stability_steps), Steps(stream, 4))
        history = fit(model, data, spec, run)
        row = history[-1]
        out[name] = {
            "steps": args.stability_steps,
            "batch_size": p.batch_size,
            "lr": p.lr,
            "warmup_steps": p.warmup_steps,
            "amp_bf16": cuda,
            "nonfinite_steps": int(row["train/nonfinite_steps"]),
            "all_finite": all(math.isfinite(v) for v in row.values())
            and row["train/nonfinite_steps"] == 0,
            "seconds": time.perf_counter() - start,
            "last_epoch": row,
        }
        print(f"stability {name}: {out[name]['all_finite']}", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, seconds")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --smoke")
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--large-batch", type=int, default=1024, help="resident images only")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=8, help="untimed steps before (compile)")
    parser.add_argument("--stability-steps", type=int, default=300)
    parser.add_argument("--embed-batch", type=int, default=1024)
    parser.add_argument("--full-grid", action="store_true", help="compile on in every setting")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    if args.smoke:  # every code path, at sizes a CPU runs in seconds
        args.images, args.size, args.batches, args.large_batch = 24, 32, [4, 8], 16
        args.steps, args.warmup, args.stability_steps, args.embed_batch = 2, 1, 6, 32
        torch.set_num_threads(1)  # tiny tensors: threads only contend
    device = torch.device(args.device or ("cpu" if args.smoke else "cuda"))
    env = environment(device, args.smoke)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    begin = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        folder = Path(tmp)
        shards, rows = build_shards(folder, args.images, args.size)
        embed = embed_and_cache(folder, rows, args.smoke, device, args.embed_batch)
        common = {"environment": env, "settings": settings, "captions": len(rows)}
        write_json(args.out_dir / "gpu_embed.json", {**common, "results": embed})
        train = train_grid(args, folder, shards, len(rows), device)
        write_json(args.out_dir / "gpu_train.json", {**common, "results": train})
        stable = stability(args, folder, shards, len(rows), device)
        write_json(args.out_dir / "gpu_stability.json", {**common, "results": stable})
    print(f"gpu_check: {time.perf_counter() - begin:.0f} s on {env['device']}", flush=True)


if __name__ == "__main__":
    main()
