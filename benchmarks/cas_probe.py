"""Coverage levers side by side (issue 26): judged accuracy, FD and CAS of Fashion-MNIST CVAEs
at main-job scale, each sampled from its prior and from the ex-post latent density.

Every arm trains one model of the class table (pipeline/models/registry.py) with the
pipeline's own loop (pipeline/train.py fit) on the 60,000 training images, then for each
sampler draws ``--per-class`` images per class (seed 0) and scores them with the main job's
trained judge (models/judge, from `dvc repro judge`): accuracy against the intended class,
Fréchet distance of judge features to the 10,000 real test images, and CAS: a fresh classifier
of the judge's architecture trained on those samples only by the recipe given
(``--cas-epochs``, one-cycle to ``--cas-lr``), tested on the real test set. ``real`` is the
same classifier trained on the real training images: the ceiling.

    python benchmarks/cas_probe.py --arms conv_b1,conv_b025 --out /tmp/probe.json

No value here picks, filters or weights samples by a classifier: the judge only scores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.cas import classifier, train_classifier  # noqa: E402
from pipeline.checkpoint import load_model  # noqa: E402
from pipeline.config import FitSpec  # noqa: E402
from pipeline.data.batches import InMemoryBatches  # noqa: E402
from pipeline.data.fmnist import LABELS, load_tensors  # noqa: E402
from pipeline.evaluate import (  # noqa: E402
    conditional_accuracy,
    frechet_distance,
    judge_outputs,
    sample_in_batches,
)
from pipeline.frontier import class_spread  # noqa: E402
from pipeline.latent_density import ExPostDensity  # noqa: E402
from pipeline.models.judge import JudgeCNN  # noqa: E402
from pipeline.models.registry import build  # noqa: E402
from pipeline.train import FitData, FitRun, fit  # noqa: E402

RAW = ROOT / "data" / "raw" / "fmnist"
CONV = dict(arch="conv", width=32, cond_hidden=128, prior="standard", likelihood="bernoulli")
CONV |= dict(fusion="concat", cond_noise=0.0, cond_dropout=0.0)
ARMS = {  # name -> (class, arch, epochs)
    "mlp_paper": ("cvae_mlp", dict(hidden_dim=400, latent_dim=20, fusion="concat"), 40),
    "conv_b1": ("cvae_prior", CONV | dict(latent_dim=16, beta=1.0), 8),
    "conv_b05_l32": ("cvae_prior", CONV | dict(latent_dim=32, beta=0.5), 8),
    "conv_b025_l32": ("cvae_prior", CONV | dict(latent_dim=32, beta=0.25), 8),
    "conv_b01_l32": ("cvae_prior", CONV | dict(latent_dim=32, beta=0.1), 8),
    "conv64_b025_l32": ("cvae_prior", CONV | dict(latent_dim=32, beta=0.25, width=64), 8),
    "conv_b003_l32": ("cvae_prior", CONV | dict(latent_dim=32, beta=0.03, width=32), 8),
    "conv_b01_l64": ("cvae_prior", CONV | dict(latent_dim=64, beta=0.1, width=32), 8),
    "conv64_b01_l32": ("cvae_prior", CONV | dict(latent_dim=32, beta=0.1, width=64), 8),
    "conv_b01_l32_e20": ("cvae_prior", CONV | dict(latent_dim=32, beta=0.1, width=32), 20),
    "conv_b001_l32": ("cvae_prior", CONV | dict(latent_dim=32, beta=0.01, width=32), 8),
    "conv_b003_l32_e16": ("cvae_prior", CONV | dict(latent_dim=32, beta=0.03, width=32), 16),
    "conv_b0003_l32": ("cvae_prior", CONV | dict(latent_dim=32, beta=0.003, width=32), 8),
    "conv_b001_l64": ("cvae_prior", CONV | dict(latent_dim=64, beta=0.01, width=32), 8),
    "conv_b001_l128": ("cvae_prior", CONV | dict(latent_dim=128, beta=0.01, width=32), 8),
}


def spec(epochs: int, lr: float, schedule: str) -> FitSpec:
    return FitSpec(
        seed=0,
        device="cpu",
        epochs=epochs,
        batch_size=128,
        lr=lr,
        lr_schedule=schedule,
        weight_decay=0.0,
        grad_clip=None,
        warmup_steps=0,
        max_nonfinite_steps=20,
        max_nonfinite_share=0.5,
        cond_null_p=0.0,
        keep_epochs=[],
        amp=False,
    )


def cas(x, y, test, args) -> float:
    torch.manual_seed(0)
    net = classifier(128, torch.device("cpu"))
    p = spec(args.cas_epochs, args.cas_lr, "onecycle")
    run = FitRun("cas probe", torch.Generator().manual_seed(0), fingerprint="")
    return train_classifier(net, p, (x, y), test, run)[-1]["test/accuracy"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arms", default="conv_b1,conv_b025_l32")
    ap.add_argument("--epochs", type=int, default=None, help="override every arm's epochs")
    ap.add_argument("--samplers", default="prior,expost10,expost30", help="name[@T]: expost10@1.5")
    ap.add_argument("--per-class", type=int, default=6000)
    ap.add_argument("--cas-epochs", type=int, default=6)
    ap.add_argument("--cas-lr", type=float, default=0.003)
    ap.add_argument("--real", action="store_true", help="also the real-data CAS ceiling")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    x_train, y_train = load_tensors(RAW, "train", None, torch.device("cpu"))
    test = load_tensors(RAW, "test", None, torch.device("cpu"))
    judge, _ = load_model(ROOT / "models" / "judge", torch.device("cpu"), expect=JudgeCNN)
    real_pred, real_feat = judge_outputs(judge, test[0])
    results = {"recipe": vars(args) | {"out": str(args.out)}, "rows": []}
    if args.real:
        results["rows"].append({"arm": "real", "cas": cas(x_train, y_train, test, args)})
        print(results["rows"][-1], flush=True)
    intended = torch.arange(10).repeat_interleave(args.per_class)
    onehot = F.one_hot(intended, 10).float()
    for arm in filter(None, args.arms.split(",")):
        kind, arch, epochs = ARMS[arm]
        epochs = args.epochs or epochs
        torch.manual_seed(0)
        model = build(f"arm {arm}", kind, arch, input_dim=784, cond_dim=10)
        start = time.time()
        c_train = F.one_hot(y_train, 10).float()
        data = FitData(
            InMemoryBatches(x_train, c_train, batch_size=128),
            InMemoryBatches(test[0], F.one_hot(test[1], 10).float(), batch_size=1000),
        )
        run = FitRun(arm, torch.Generator().manual_seed(0), "")
        history = fit(model, data, spec(epochs, 1e-3, "constant"), run)
        train_s = time.time() - start
        for sampler in args.samplers.split(","):
            generator = torch.Generator().manual_seed(0)
            start = time.time()
            name, _, t = sampler.partition("@")  # "expost10@1.5": 10 components, T 1.5
            t = float(t or 1.0)
            if name == "prior":
                samples = sample_in_batches(model, onehot, generator, 1000, t)
            else:
                density = ExPostDensity.fit(model, x_train, y_train, 10, int(name[6:]), seed=0)
                samples = density.decode(model, intended, generator, t)
            sample_s = time.time() - start
            pred, feat = judge_outputs(judge, samples)
            row = {
                "arm": arm,
                "sampler": sampler,
                "epochs": epochs,
                "train_s": train_s,
                "sample_s": sample_s,
                "test_loss": history[-1]["test/loss"],
                "accuracy": conditional_accuracy(pred, intended, LABELS)["overall"],
                "fd": frechet_distance(feat, real_feat),
                "spread": class_spread(feat, intended),
                "cas": cas(samples, intended, test, args),
            }
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
            args.out.write_text(json.dumps(results, indent=1) + "\n")
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
