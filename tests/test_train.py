"""The shared training loop: determinism, exact resume, and the resume guard."""

import csv

import torch
import torch.nn.functional as F

from pipeline.checkpoint import load_model, save_model
from pipeline.models.cvae_mlp import CVAEMLP
from pipeline.runtime import make_deterministic, resolve_device
from pipeline.train import FitSpec, InMemoryBatches, fit, run_fingerprint


def toy_data(n=96):
    """Each class is a fixed binary pattern, so a CVAE can learn it from few images."""
    g = torch.Generator().manual_seed(123)
    templates = (torch.rand(10, 784, generator=g) > 0.5).float()
    labels = torch.randint(0, 10, (n,), generator=g)
    x, c = templates[labels], F.one_hot(labels, 10).float()
    return InMemoryBatches(x, c, batch_size=32), InMemoryBatches(x[:32], c[:32], batch_size=32)


def train_toy(tmp, epochs, lr=1e-3, name="run"):
    generator = make_deterministic(7, torch.device("cpu"))
    model = CVAEMLP(784, 10, 16, 4)
    train, test = toy_data()
    history = fit(
        model,
        train,
        test,
        FitSpec(epochs=epochs, batch_size=32, lr=lr),
        generator=generator,
        state_path=tmp / name / "state.safetensors",
        live_dir=tmp / name / "live",
        fingerprint=run_fingerprint(model, {"lr": lr}),
    )
    return model, history


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_same_seed_gives_identical_weights(tmp_path):
    a, history_a = train_toy(tmp_path, 2, name="a")
    b, history_b = train_toy(tmp_path, 2, name="b")
    assert_same(weights(a), weights(b))
    assert history_a == history_b


def test_resumed_run_ends_at_the_weights_of_an_uninterrupted_run(tmp_path):
    full, full_history = train_toy(tmp_path, 4, name="full")
    train_toy(tmp_path, 2, name="resumed")  # "interrupted" after epoch 2
    resumed, resumed_history = train_toy(tmp_path, 4, name="resumed")
    assert_same(weights(full), weights(resumed))
    assert resumed_history == full_history
    with open(tmp_path / "resumed" / "live" / "plots" / "metrics" / "train" / "loss.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3]  # curves are whole after a resume


def test_state_of_other_params_is_not_resumed(tmp_path):
    train_toy(tmp_path, 3, lr=1e-3, name="x")
    _, history = train_toy(tmp_path, 2, lr=5e-3, name="x")
    fresh, fresh_history = train_toy(tmp_path, 2, lr=5e-3, name="fresh")
    assert history == fresh_history


def test_training_overfits_a_few_images(tmp_path):
    _, history = train_toy(tmp_path, 30, lr=1e-2)
    assert history[-1]["train/loss"] < history[0]["train/loss"] / 5
    assert set(history[0]) == {
        f"{s}/{t}" for s in ("train", "test") for t in ("loss", "recon", "kl")
    }


def test_saved_model_loads_back_identically(tmp_path):
    model = CVAEMLP(784, 10, 16, 4)
    save_model(tmp_path / "m", model, {"labels": ["a"]})
    loaded, config = load_model(tmp_path / "m")
    assert config["latent_dim"] == 4 and config["labels"] == ["a"]
    assert_same(weights(model), weights(loaded))
    assert not (tmp_path / "m" / "model.safetensors").read_bytes().startswith(b"\x80")  # no pickle


def test_auto_device_is_cpu_without_cuda():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
