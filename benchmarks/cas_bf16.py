"""The CAS classifier on the CPU in fp32 and under bf16 autocast (FitSpec ``amp``), side by side.

Trains the judge's architecture (pipeline/models/judge.py, the CAS classifier) on the 60,000
real training images through the pipeline's own loop (pipeline/train.py fit) with the CAS
recipe of params.yaml, once in fp32 and once with ``amp: true`` (bf16 autocast, which on a
CPU with bf16 matrix units such as Intel AMX runs the convolutions and matrix products in
bf16), and reports each run's wall time, images per second and real-test accuracy after every
epoch: the speed-up as a ratio and what bf16 costs in accuracy.

    python benchmarks/cas_bf16.py --out benchmarks/results/cas_bf16.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.cas import classifier, train_classifier  # noqa: E402
from pipeline.config import load_params  # noqa: E402
from pipeline.data.fmnist import load_tensors  # noqa: E402
from pipeline.train import FitRun  # noqa: E402


def run(amp: bool, epochs: int, train, test) -> dict:
    spec = load_params(ROOT / "params.yaml").cas
    spec = spec.model_copy(update={"amp": amp, "epochs": epochs, "device": "cpu"})
    torch.manual_seed(spec.seed)
    net = classifier(128, torch.device("cpu"))
    start = time.perf_counter()
    run = FitRun(f"cas real amp={amp}", torch.Generator().manual_seed(spec.seed), "")
    history = train_classifier(net, spec, train, test, run)
    seconds = time.perf_counter() - start
    return {
        "amp": amp,
        "epochs": epochs,
        "lr": spec.lr,
        "lr_schedule": spec.lr_schedule,
        "seconds": seconds,
        "images_per_s": epochs * len(train[0]) / seconds,
        "test_accuracy_by_epoch": [row["test/accuracy"] for row in history],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=None, help="default: params.yaml cas.epochs")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    epochs = args.epochs or load_params(ROOT / "params.yaml").cas.epochs
    raw = ROOT / "data" / "raw" / "fmnist"
    train = load_tensors(raw, "train", None, torch.device("cpu"))
    test = load_tensors(raw, "test", None, torch.device("cpu"))
    rows = [run(amp, epochs, train, test) for amp in (False, True)]
    result = {
        "what": "CAS classifier on the 60,000 real training images, fp32 against bf16 autocast",
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "runs": rows,
        "speedup_bf16": rows[0]["seconds"] / rows[1]["seconds"],
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
