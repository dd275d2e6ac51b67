"""The COCO models at the paper's full size and optimiser settings on real photographs.

Not a speed benchmark: it measures whether training stays finite and how fast the
reconstruction term falls, for the paper's exact models and for each stability remedy
(pipeline/models/stability.py), side by side. Images: crops, flips and scales of
scikit-image's photographs at 224x224 (pipeline/testing/photos.py); captions: a fixed random
unit vector per photograph (the condition's content does not matter for stability).

Each variant trains through the real loop (pipeline.train.fit, with its non-finite guard)
for --steps optimizer steps at --batch-size: the paper's optimiser (constant lr, no condition
dropout), gradients clipped to norm 1, fp32; the guard's max_nonfinite_share is that of the
model's params.yaml entry. Per epoch it records the reconstruction term's excess over its
floor (Model 1's BCE: the images' binary entropy; Model 2's MSE: 0), the KL and the skipped
steps. "ratio" is the last epoch's excess over the first epoch's.

    python benchmarks/stability.py                          # both models, all variants
    python benchmarks/stability.py --models coco_clip --variants paper,remedies
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.atomic import atomic_path
from pipeline.config import load_params
from pipeline.data.batches import InMemoryBatches
from pipeline.errors import PipelineError
from pipeline.models.cvae_clip import CVAEClip
from pipeline.models.cvae_gated import CVAEGated
from pipeline.runtime import make_deterministic
from pipeline.testing.photos import PHOTOS, binary_entropy_per_image, photo_variants
from pipeline.train import FitData, FitRun, fit

REPO = Path(__file__).resolve().parents[1]

# name -> (model kwargs, warmup steps). "remedies" is the default of params.yaml.
VARIANTS = {
    "coco_clip": {
        "paper": ({"feature_norm": False, "logvar_bound": None}, 0),
        "warmup_only": ({"feature_norm": False, "logvar_bound": None}, 100),
        "bound+warmup": ({"feature_norm": False, "logvar_bound": 8.0}, 100),
        "norm+warmup": ({"feature_norm": True, "logvar_bound": None}, 100),
        "norm+bound": ({"feature_norm": True, "logvar_bound": 8.0}, 0),
        "remedies": ({"feature_norm": True, "logvar_bound": 8.0}, 100),
    },
    "coco_t5": {
        "paper": ({"logvar_bound": None}, 0),
        "warmup_only": ({"logvar_bound": None}, 100),
        "bound_only": ({"logvar_bound": 8.0}, 0),
        "remedies": ({"logvar_bound": 8.0}, 100),
    },
}
OPTIMISER = {"coco_clip": (5e-3, 1e-5), "coco_t5": (1e-3, 0.0)}  # paper §2.2, §2.3


def photos(count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    variants = photo_variants(count)
    images = np.stack([np.asarray(im.convert("RGB").resize((size, size))) for im, _ in variants])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    g = torch.Generator().manual_seed(0)
    texts = torch.nn.functional.normalize(torch.randn(len(PHOTOS), 512, generator=g), dim=1)
    c = texts[[i % len(PHOTOS) for i in range(count)]]
    return x, c


def run(model_name: str, variant: str, x, c, args) -> dict:
    kwargs, warmup = VARIANTS[model_name][variant]
    if args.warmup is not None and warmup:
        warmup = args.warmup
    generator = make_deterministic(0, torch.device("cpu"))
    if model_name == "coco_clip":
        sizes = dict(image_size=args.size, text_dim=512, latent_dim=128)
        model = CVAEClip.of(**sizes, width=args.width, fusion="concat", **kwargs)
    else:
        sizes = dict(image_size=args.size, text_dim=512, latent_dim=128)
        model = CVAEGated.of(**sizes, fusion="gated", beta=1.0, **kwargs)
    lr, weight_decay = OPTIMISER[model_name]
    steps_per_epoch = -(-len(x) // args.batch_size)
    # the paper's schedule at this variant's warmup; the rest (max_nonfinite_share) as the
    # entry has it. No kept epochs; fp32 (on the CPU autocast does not apply anyway)
    spec = (
        load_params(REPO / "params.yaml")
        .model(model_name)
        .train.model_copy(
            update={
                "epochs": -(-args.steps // steps_per_epoch),
                "batch_size": args.batch_size,
                "lr": lr,
                "lr_schedule": "constant",
                "weight_decay": weight_decay,
                "grad_clip": 1.0,
                "warmup_steps": warmup,
                "max_nonfinite_steps": args.max_nonfinite_steps,
                "cond_null_p": 0.0,
                "keep_epochs": [],
                "amp": False,
            }
        )
    )
    floor = binary_entropy_per_image(x.numpy()) if model_name == "coco_clip" else 0.0
    result = {
        "model": model_name,
        "variant": variant,
        "model_kwargs": kwargs,
        "warmup_steps": warmup,
        "lr": lr,
        "weight_decay": weight_decay,
        "recon_floor_per_image": floor,
    }
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            data = FitData(
                InMemoryBatches(x, c, batch_size=args.batch_size),
                InMemoryBatches(x[:8], c[:8], batch_size=8),
            )
            state, live = Path(tmp) / "state.safetensors", Path(tmp) / "live"
            where = FitRun(f"{model_name}/{variant}", generator, "stability", state, live)
            history = fit(model, data, spec, where)
            result["outcome"] = "finite"
        except PipelineError as exc:
            state = Path(tmp) / "state.safetensors"
            history = []
            if state.exists():
                from pipeline.checkpoint import load_state

                history = load_state(state)[1]["history"]
            result["outcome"] = f"stopped: {exc}"
    result["seconds"] = round(time.perf_counter() - start, 1)
    excess = [row["train/recon"] - floor for row in history]
    result["epochs"] = [
        {
            "excess": round(e, 1),
            "kl": round(row["train/kl"], 2),
            "skipped": int(row["train/nonfinite_steps"]),
        }
        for e, row in zip(excess, history, strict=True)
    ]
    finished = len(history) == spec.epochs
    result["ratio"] = round(excess[-1] / excess[0], 3) if finished and excess[0] > 0 else None
    print(
        json.dumps({k: result[k] for k in ("model", "variant", "outcome", "ratio", "seconds")}),
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="coco_clip,coco_t5")
    parser.add_argument("--variants", default="", help="comma list; empty: all")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--width", type=int, default=64, help="Model 1's first conv (paper: 64)")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=105)
    parser.add_argument("--max-nonfinite-steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=None, help="override variants' warmup")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: default")
    parser.add_argument("--out", default="benchmarks/results/stability.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x, c = photos(args.images, args.size)
    report = {
        "settings": {
            **vars(args),
            "torch": torch.__version__,
            "machine": platform.machine(),
            "cpu_threads": torch.get_num_threads(),
        },
        "results": [],
    }
    for model_name in args.models.split(","):
        wanted = args.variants.split(",") if args.variants else list(VARIANTS[model_name])
        for variant in (v for v in wanted if v in VARIANTS[model_name]):
            report["results"].append(run(model_name, variant, x, c, args))
            assert math.isfinite(report["results"][-1]["recon_floor_per_image"])
            with atomic_path(args.out) as tmp:  # after every variant: long runs keep results
                tmp.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")


if __name__ == "__main__":
    main()
