"""Stage judge: the Fashion-MNIST classifier that scores generated images."""

from pathlib import Path

from pipeline.checkpoint import save_model
from pipeline.config import load_params
from pipeline.data.batches import InMemoryBatches
from pipeline.data.fmnist import LABELS, load_tensors
from pipeline.errors import PipelineError
from pipeline.models.registry import model_spec
from pipeline.runtime import make_deterministic, resolve_device
from pipeline.train import fit
from stages.fingerprint import training_fingerprint
from stages.layout import RAW_FMNIST, live_dir, model_dir, state_file


def run(params_path: Path) -> None:
    spec = model_spec("judge")
    p = spec.train_params(load_params(params_path))
    device = resolve_device(p.device)
    generator = make_deterministic(p.seed, device)
    x_train, y_train = load_tensors(RAW_FMNIST, "train", p.train_limit, device)
    x_test, y_test = load_tensors(RAW_FMNIST, "test", None, device)
    model = spec.build(p, num_classes=len(LABELS)).to(device)
    history = fit(
        model,
        InMemoryBatches(x_train, y_train, batch_size=p.batch_size),
        InMemoryBatches(x_test, y_test, batch_size=1000),
        p,
        name="judge",
        lr_schedule=p.lr_schedule,
        generator=generator,
        state_path=state_file("judge"),
        live_dir=live_dir("judge"),
        fingerprint=training_fingerprint("t2i judge", model, p),
    )
    accuracy = history[-1]["test/accuracy"]
    if accuracy < p.min_accuracy:  # no metric of a judge that does not exist
        (live_dir("judge") / "metrics.json").unlink(missing_ok=True)
        raise PipelineError(
            f"judge: test accuracy {accuracy:.4f} is below judge.min_accuracy "
            f"{p.min_accuracy}; raise judge.epochs (training resumes where it stopped)"
        )
    save_model(
        model_dir("judge"),
        model,
        "judge",
        {"dataset": "fmnist", "labels": LABELS, "test_accuracy": accuracy},
    )
