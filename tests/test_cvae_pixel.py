"""The conv CVAE with a row-autoregressive head (benchmarks/cvae_pixel.py: an experiment of the
coverage probe, not a registered model, so it lives in benchmarks/): shapes, the head's
causality, sampling on crops equal to the full autoregression, the project's metrics, and a
few training steps on real Fashion-MNIST images."""

import importlib.util
import json
import math
import sys

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from pipeline.data.fmnist import load_tensors
from pipeline.data.fmnist_download import fetch_fmnist
from pipeline.evaluate import importance_weighted_nll, negative_elbo, sample_images

from .conftest import REPO


def _benchmark_module(name: str):
    """benchmarks/<name>.py as the module ``name``, as benchmarks/coverage_probe.py imports it
    (benchmarks/ is no package: a script's own folder is its first import path)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pydantic resolves the config's annotations through it
    spec.loader.exec_module(module)
    return module


CVAEPixel = _benchmark_module("cvae_pixel").CVAEPixel


def small() -> CVAEPixel:
    torch.manual_seed(0)
    return CVAEPixel.of(
        cond_dim=10,
        latent_dim=6,
        width=4,
        cond_hidden=8,
        prior="standard",
        feature_channels=3,
        ar_channels=4,
    ).eval()


def test_shapes_losses_and_config():
    model = small()
    x, c = torch.rand(5, 784), torch.eye(10)[:5]
    assert model.decode_logits(torch.randn(5, 6), c).shape == (5, 3 * 784)
    assert model.decode_logits(torch.randn(2, 5, 6), c.expand(2, 5, 10)).shape == (2, 5, 3 * 784)
    terms = model.batch_losses(x, c)
    assert set(terms) == {"loss", "recon", "kl"} and all(torch.isfinite(v) for v in terms.values())
    images = sample_images(model, c, torch.Generator().manual_seed(0))
    assert images.shape == (5, 784) and images.min() >= 0 and images.max() <= 1
    guided = sample_images(model, c, torch.Generator().manual_seed(0), guidance=2.0)
    assert guided.shape == (5, 784) and guided.min() >= 0 and guided.max() <= 1
    assert not torch.allclose(guided, images)  # w = 2 pushes the head's features off w = 0
    assert model.kind == "cvae_pixel" and model.config.feature_channels == 3
    rebuilt = CVAEPixel(CVAEPixel.Config(**json.loads(model.config.model_dump_json())))
    assert rebuilt.config == model.config
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    assert rebuilt.load_state_dict(model.state_dict()).missing_keys == []


def test_the_config_names_every_argument_and_checks_it():
    fields = {
        "cond_dim": 10,
        "latent_dim": 6,
        "width": 4,
        "cond_hidden": 8,
        "prior": "learned",
        "feature_channels": 3,
        "ar_channels": 4,
    }
    assert set(CVAEPixel.Config.model_fields) == set(fields)
    assert CVAEPixel.of(**fields).prior_net is not None  # learned: a prior network
    for bad in ({"feature_channels": 0}, {"width": "4"}, {"arch": "mlp"}):
        with pytest.raises(ValidationError):
            CVAEPixel.of(**{**fields, **bad})


def test_row_r_sees_only_the_rows_above_it():
    model = small()
    f = torch.randn(2, 3, 28, 28)
    x = torch.rand(2, 1, 28, 28)
    base = model.ar_logits(f, x)
    changed = x.clone()
    changed[:, :, 12:] = torch.rand(2, 1, 16, 28)  # rows 12.. differ
    after = model.ar_logits(f, changed)
    assert torch.equal(base[:, :, :13], after[:, :, :13])  # rows 0..12 see rows < 13 only
    assert not torch.allclose(base[:, :, 13], after[:, :, 13])  # row 13 sees row 12
    far = x.clone()
    far[:, :, :7] = 1 - far[:, :, :7]  # rows 0..6: more than 5 rows above row 12
    assert torch.equal(base[:, :, 12:], model.ar_logits(f, far)[:, :, 12:])


def test_sampling_on_crops_equals_the_full_autoregression():
    model = small()
    z, c = torch.randn(4, 6), torch.eye(10)[:4]
    f = model.decode_logits(z, c).reshape(4, 3, 28, 28)
    canvas = torch.zeros(4, 1, 28, 28)
    with torch.no_grad():
        for r in range(28):  # every row from the whole image so far
            canvas[:, :, r] = torch.sigmoid(model.ar_logits(f, canvas)[:, :, r])
    assert torch.allclose(model.decode(z, c), canvas.flatten(1), atol=1e-6)


def test_the_projects_bounds_apply_and_the_loss_falls_on_real_fashion_mnist(
    tmp_path, fmnist_gz_dir
):
    raw = tmp_path / "raw"
    fetch_fmnist(raw, source="local", local_dir=str(fmnist_gz_dir))
    x, y = load_tensors(raw, "train", 256)
    c = F.one_hot(y, 10).float()
    torch.manual_seed(0)
    model = CVAEPixel.of(
        cond_dim=10,
        latent_dim=8,
        width=8,
        cond_hidden=16,
        prior="standard",
        feature_channels=4,
        ar_channels=16,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for step in range(30):
        part = slice((step % 4) * 64, (step % 4 + 1) * 64)
        model.train()
        terms = model.batch_losses(x[part], c[part])
        optimizer.zero_grad()
        (terms["loss"] / 64).backward()
        optimizer.step()
        assert all(torch.isfinite(v) for v in terms.values())
        losses.append(terms["loss"].item() / 64)
    # An untrained decoder scores at least about 784 ln 2 = 543 nats of BCE; steps go far lower.
    assert losses[0] > 784 * math.log(2) - 10
    assert sum(losses[-4:]) / 4 < 0.75 * losses[0]
    elbo = negative_elbo(model, x[:64], c[:64])
    assert elbo["nelbo"] == elbo["recon"] + elbo["kl"]
    torch.manual_seed(1)
    iw = importance_weighted_nll(model, x[:64], c[:64], k=8)
    assert math.isfinite(iw) and iw < elbo["nelbo"] + 5  # the k = 8 bound is no looser
