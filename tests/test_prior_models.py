"""The CVAE with a learned prior (pipeline/models/cvae_prior.py): shapes, the KL against a
learned prior, the continuous Bernoulli, and the metrics that sample from p(z|c)."""

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.evaluate import importance_weighted_nll, negative_elbo, prior, sample_images
from pipeline.models.cvae_prior import (
    continuous_bernoulli_log_norm,
    continuous_bernoulli_mean,
    gaussian_kl,
)

from .conftest import tiny_prior


@pytest.mark.parametrize("arch", ["conv", "mlp"])
@pytest.mark.parametrize("fusion", ["concat", "add", "gated"])
def test_shapes_of_both_bodies_and_every_fusion(arch, fusion):
    model = tiny_prior(fusion=fusion, arch=arch)
    x, c = torch.rand(5, 784), torch.eye(10)[:5]
    mu, logvar = model.encode(x, c)
    mu_p, logvar_p = model.prior(c)
    assert mu.shape == logvar.shape == mu_p.shape == logvar_p.shape == (5, 6)
    terms = model.batch_losses(x, c)
    assert set(terms) == {"loss", "recon", "kl"} and all(torch.isfinite(v) for v in terms.values())
    images = model.decode(torch.randn(3, 5, 6), c.expand(3, 5, 10))  # (k, B, L) as IW uses
    assert images.shape == (3, 5, 784) and images.min() >= 0 and images.max() <= 1


def test_gaussian_kl_matches_the_closed_form_and_is_zero_between_equals():
    mu, logvar = torch.tensor([[0.3, -1.0]]), torch.tensor([[0.0, math.log(4.0)]])
    assert gaussian_kl(mu, logvar, mu, logvar).item() == pytest.approx(0.0, abs=1e-7)
    mu_p, logvar_p = torch.tensor([[1.0, 0.0]]), torch.tensor([[math.log(2.0), 0.0]])
    # 0.5 * (log s_p^2 / s^2 + (s^2 + (m - m_p)^2) / s_p^2 - 1), per dimension
    expected = 0.5 * (math.log(2.0) + (1 + 0.49) / 2 - 1) + 0.5 * (-math.log(4.0) + 4 + 1 - 1)
    assert gaussian_kl(mu, logvar, mu_p, logvar_p).item() == pytest.approx(expected, rel=1e-6)


def test_standard_prior_is_n01_and_a_learned_one_depends_on_the_condition():
    c = torch.eye(10)[:4]
    mu, logvar = prior(
        tiny_prior(prior="standard", arch="conv"),
        c,
    )
    assert torch.equal(mu, torch.zeros(4, 6)) and torch.equal(logvar, torch.zeros(4, 6))
    torch.manual_seed(0)
    mu, _ = prior(
        tiny_prior(arch="conv"),
        c,
    )
    assert not torch.allclose(mu[0], mu[1])


@pytest.mark.parametrize("logit", [-20.0, -3.0, -0.5, -0.004, 0.0, 0.006, 0.5, 3.0, 20.0])
def test_continuous_bernoulli_normaliser_and_mean_match_numerical_integration(logit):
    x = torch.linspace(0, 1, 200_001, dtype=torch.float64)
    lam = torch.sigmoid(torch.tensor(logit, dtype=torch.float64))
    density = lam**x * (1 - lam) ** (1 - x)
    z = torch.trapezoid(density, x)
    l32 = torch.tensor([logit])
    assert continuous_bernoulli_log_norm(l32).item() == pytest.approx(-math.log(z), abs=1e-5)
    mean = torch.trapezoid(x * density, x) / z
    assert continuous_bernoulli_mean(l32).item() == pytest.approx(mean.item(), abs=1e-4)


def test_continuous_bernoulli_is_a_density_so_its_likelihood_can_exceed_bernoullis():
    torch.manual_seed(0)
    x = torch.rand(8, 784)
    cb = tiny_prior(likelihood="continuous_bernoulli")
    bern = tiny_prior()
    bern.load_state_dict(cb.state_dict())
    logits = torch.randn(8, 784) * 3
    gap = cb.log_likelihood(logits, x) - bern.log_likelihood(logits, x)
    assert torch.allclose(gap, continuous_bernoulli_log_norm(logits).sum(-1))
    assert bool((gap > 0).all())  # log C(l) >= log 2 > 0


def test_temperature_scales_the_spread_around_the_prior_mean():
    torch.manual_seed(0)
    model = tiny_prior()
    c = torch.eye(10)[[3] * 2000]
    mu_p, _ = model.prior(c[:1])
    at_mean = model.decode(mu_p, c[:1])
    spread = {}
    for t in (1.0, 0.1):
        samples = sample_images(model, c, torch.Generator().manual_seed(0), temperature=t)
        spread[t] = (samples - at_mean).abs().mean().item()
    assert spread[0.1] < 0.2 * spread[1.0]


def test_importance_weighted_bound_uses_the_learned_prior():
    torch.manual_seed(0)
    model = tiny_prior(latent_dim=4)
    with torch.no_grad():  # a prior far from N(0, I), so using N(0, I) would show
        model.prior_net[-1].bias.copy_(torch.tensor([3.0, -3.0, 2.0, 1.0, 0.5, 0.5, 0.5, 0.5]))
    x, c = torch.rand(100, 784), F.one_hot(torch.arange(100) % 10, 10).float()
    nelbo = negative_elbo(model, x, c)["nelbo"]
    k1 = importance_weighted_nll(model, x, c, k=1)
    k64 = importance_weighted_nll(model, x, c, k=64)
    assert math.isclose(k1, nelbo, rel_tol=0.01)  # both one-sample estimates of -ELBO
    assert k64 < k1
