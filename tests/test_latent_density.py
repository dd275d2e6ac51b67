"""Ex-post latent density (pipeline/latent_density.py): the EM fit of the mixtures, their
samples, and decoding a CVAE's samples from them on real Fashion-MNIST images."""

import pytest
import torch
import torch.nn.functional as F

from pipeline.data.fmnist import load_tensors
from pipeline.data.fmnist_download import fetch_fmnist
from pipeline.latent_density import ExPostDensity, gaussian_mixture

from .conftest import tiny_prior


def two_classes(n: int = 4000):
    g = torch.Generator().manual_seed(0)
    a = torch.tensor([3.0, -1.0]) + torch.randn(n, 2, generator=g) * torch.tensor([2.0, 0.5])
    b = torch.tensor([-2.0, 2.0]) + torch.randn(n, 2, generator=g)
    return torch.cat([a, b]), torch.cat(
        [torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)]
    )


def test_one_component_is_each_class_gaussian_and_its_samples_follow_it():
    codes, labels = two_classes()
    density = ExPostDensity.fit_codes(codes, labels, num_classes=2, components=1, seed=0)
    for k in (0, 1):
        rows = codes[labels == k].double()
        assert torch.allclose(density.means[k, 0].double(), rows.mean(0), atol=1e-5)
        cov = density.chol[k, 0].double() @ density.chol[k, 0].double().T
        biased = torch.cov(rows.T, correction=0)  # the mixture's maximum-likelihood covariance
        assert torch.allclose(cov, biased, atol=1e-4)
    draws = density.sample(torch.zeros(40000, dtype=torch.long), torch.Generator().manual_seed(1))
    assert torch.allclose(draws.mean(0), torch.tensor([3.0, -1.0]), atol=0.05)
    assert torch.allclose(draws.std(0), torch.tensor([2.0, 0.5]), rtol=0.05)


def test_em_recovers_a_known_two_component_mixture():
    g = torch.Generator().manual_seed(0)
    skew = torch.tensor([[1.0, 0.5], [0.0, 0.3]])  # rows: x @ skew has covariance skew^T skew
    a = torch.randn(6000, 2, generator=g) * 0.5 + torch.tensor([4.0, 0.0])
    b = torch.randn(2000, 2, generator=g) @ skew + torch.tensor([-4.0, 2.0])
    weights, means, chol = gaussian_mixture(torch.cat([a, b]), components=2, seed=0)
    order = means[:, 0].argsort(descending=True)  # component of a first
    weights, means, cov = weights[order], means[order], (chol @ chol.transpose(1, 2))[order]
    assert torch.allclose(weights, torch.tensor([0.75, 0.25], dtype=torch.float64), atol=1e-6)
    # Well apart (8 standard deviations), each component is its cluster's ML Gaussian.
    for k, rows in enumerate((a.double(), b.double())):
        assert torch.allclose(means[k], rows.mean(0), atol=1e-6)
        assert torch.allclose(cov[k], torch.cov(rows.T, correction=0), atol=1e-5)
    assert torch.allclose(cov[1], (skew.T @ skew).double(), atol=0.05)


def test_sampling_is_seeded_and_temperature_zero_gives_the_component_means():
    codes, labels = two_classes(600)
    density = ExPostDensity.fit_codes(codes, labels, num_classes=2, components=3, seed=0)
    want = torch.tensor([0, 1, 1, 0])
    a = density.sample(want, torch.Generator().manual_seed(5))
    assert torch.equal(a, density.sample(want, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, density.sample(want, torch.Generator().manual_seed(6)))
    cold = density.sample(want, torch.Generator().manual_seed(5), temperature=0.0)
    for row, k in zip(cold, want, strict=True):  # exactly one of class k's component means
        assert (density.means[k] == row).all(1).any()


def test_a_class_with_too_few_codes_is_refused():
    codes, labels = two_classes(600)
    with pytest.raises(ValueError, match="class 2 has 0 codes"):
        ExPostDensity.fit_codes(codes, labels, num_classes=3, components=2, seed=0)


def test_fits_posterior_means_of_a_cvae_and_decodes_images(tmp_path, fmnist_gz_dir):
    raw = tmp_path / "raw"
    fetch_fmnist(raw, source="local", local_dir=str(fmnist_gz_dir))
    x, y = load_tensors(raw, "train", 1000)
    torch.manual_seed(0)
    model = tiny_prior(latent_dim=4, prior="standard", arch="conv")
    density = ExPostDensity.fit(model, x, y, num_classes=10, components=1, seed=0)
    mu, _ = model.eval().encode(x, F.one_hot(y, 10).float())
    for k in range(10):
        assert torch.allclose(density.means[k, 0], mu[y == k].mean(0), atol=1e-5)
    labels = torch.arange(10).repeat_interleave(3)
    images = density.decode(model, labels, torch.Generator().manual_seed(0), batch_size=7)
    assert images.shape == (30, 784) and torch.isfinite(images).all()
    assert images.min() >= 0 and images.max() <= 1
