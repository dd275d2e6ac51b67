"""Stage train@<model>: train one CVAE with the shared loop; write weights and curves."""

from pathlib import Path

import torch.nn.functional as F

from pipeline.checkpoint import save_model
from pipeline.config import load_params
from pipeline.data.fmnist import LABELS, load_tensors
from pipeline.models.cvae_mlp import CVAEMLP
from pipeline.runtime import make_deterministic, resolve_device
from pipeline.train import FitSpec, InMemoryBatches, fit, run_fingerprint
from stages.layout import RAW_FMNIST, live_dir, model_dir, state_file


def fmnist_label(params_path: Path) -> None:
    """§2.1: the MLP CVAE conditioned on one-hot class labels."""
    name, p = "fmnist_label", load_params(params_path).train.fmnist_label
    device = resolve_device(p.device)
    generator = make_deterministic(p.seed, device)
    x_train, y_train = load_tensors(RAW_FMNIST, "train", p.train_limit, device)
    x_test, y_test = load_tensors(RAW_FMNIST, "test", None, device)
    model = CVAEMLP(784, len(LABELS), p.hidden_dim, p.latent_dim).to(device)
    fit(
        model,
        InMemoryBatches(x_train, F.one_hot(y_train, 10).float(), batch_size=p.batch_size),
        InMemoryBatches(x_test, F.one_hot(y_test, 10).float(), batch_size=1000),
        FitSpec(epochs=p.epochs, batch_size=p.batch_size, lr=p.lr),
        generator=generator,
        state_path=state_file(name),
        live_dir=live_dir(name),
        fingerprint=run_fingerprint(model, p.model_dump(exclude={"epochs"})),
    )
    save_model(model_dir(name), model, {"dataset": "fmnist", "labels": LABELS})


MODELS = {"fmnist_label": fmnist_label}
