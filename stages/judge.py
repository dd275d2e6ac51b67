"""Stage judge: the Fashion-MNIST classifier that scores generated images."""

import shutil
from pathlib import Path

from pipeline.checkpoint import save_model
from pipeline.config import load_params
from pipeline.data.batches import InMemoryBatches
from pipeline.data.fmnist import LABELS, load_tensors
from pipeline.errors import PipelineError
from pipeline.lock import model_lock
from pipeline.models.registry import FMNIST_SHAPE, build
from pipeline.runtime import make_deterministic, resolve_device
from pipeline.train import FitData, FitRun, clear_live, fit, partial_live_dir, publish_live
from stages.fingerprint import training_fingerprint
from stages.layout import RAW_FMNIST, live_dir, model_dir, state_file


def run(params_path: Path) -> None:
    p = load_params(params_path).judge
    with model_lock(model_dir("judge"), "t2i judge"):
        clear_live(live_dir("judge"))
        device = resolve_device(p.device)
        generator = make_deterministic(p.seed, device)
        x_train, y_train = load_tensors(RAW_FMNIST, "train", p.train_limit, device)
        x_test, y_test = load_tensors(RAW_FMNIST, "test", None, device)
        arch = {"feature_dim": p.feature_dim}
        model = build("judge", "judge", arch, num_classes=len(LABELS)).to(device)
        data = FitData(
            InMemoryBatches(x_train, y_train, batch_size=p.batch_size),
            InMemoryBatches(x_test, y_test, batch_size=1000),
        )
        fingerprint = training_fingerprint("t2i judge", model, p)
        run = FitRun("judge", generator, fingerprint, state_file("judge"), live_dir("judge"))
        accuracy = fit(model, data, p, run)[-1]["test/accuracy"]
        if accuracy < p.min_accuracy:  # no metric of a judge that does not exist
            shutil.rmtree(partial_live_dir(live_dir("judge")), ignore_errors=True)
            raise PipelineError(
                f"judge: test accuracy {accuracy:.4f} is below judge.min_accuracy "
                f"{p.min_accuracy}; raise judge.epochs (training resumes where it stopped)"
            )
        meta = {"name": "judge", "class": "judge", "data": "fmnist", "conditioning": None}
        meta |= {"labels": LABELS, "test_accuracy": accuracy, "cond_null_p": 0.0}
        save_model(model_dir("judge"), model, meta | {"image_shape": FMNIST_SHAPE})
        publish_live(live_dir("judge"))
