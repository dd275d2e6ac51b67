"""Metric correctness on inputs whose answer is known."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.evaluate import (
    conditional_accuracy,
    frechet_distance,
    importance_weighted_nll,
    negative_elbo,
    sample_images,
)
from pipeline.figures import image_grid
from pipeline.models.cvae_mlp import CVAEMLP


def test_frechet_distance_of_a_set_with_itself_is_zero():
    a = np.random.default_rng(0).normal(size=(500, 16))
    assert abs(frechet_distance(a, a)) < 1e-8


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(1)
    n, d = 200_000, 3
    mu_a, mu_b = np.array([0.0, 1.0, -1.0]), np.array([1.0, 1.0, 0.5])
    sd_a, sd_b = np.array([1.0, 2.0, 0.5]), np.array([0.5, 2.0, 1.5])
    a = mu_a + sd_a * rng.normal(size=(n, d))
    b = mu_b + sd_b * rng.normal(size=(n, d))
    expected = ((mu_a - mu_b) ** 2).sum() + ((sd_a - sd_b) ** 2).sum()
    assert math.isclose(frechet_distance(a, b), expected, rel_tol=0.02)


def test_importance_weighted_bound_tightens_with_k_and_k1_matches_elbo():
    torch.manual_seed(0)
    model = CVAEMLP(784, 10, 32, 4)
    x, c = torch.rand(200, 784), F.one_hot(torch.arange(200) % 10, 10).float()
    nelbo = negative_elbo(model, x, c)["nelbo"]
    k1 = importance_weighted_nll(model, x, c, k=1)
    k64 = importance_weighted_nll(model, x, c, k=64)
    assert math.isclose(k1, nelbo, rel_tol=0.01)  # both one-sample estimates of -ELBO
    assert k64 < k1


def test_conditional_accuracy_per_class():
    intended = torch.tensor([0, 0, 1, 1, 1, 2])
    predicted = torch.tensor([0, 1, 1, 1, 0, 2])
    result = conditional_accuracy(predicted, intended, ["a", "b", "c"])
    assert result["overall"] == pytest.approx(4 / 6)
    assert result["per_class"] == pytest.approx({"a": 0.5, "b": 2 / 3, "c": 1.0})


def test_samples_are_deterministic_under_a_generator():
    model = CVAEMLP(784, 10, 16, 4)
    c = torch.eye(10)
    a = sample_images(model, c, torch.Generator().manual_seed(3))
    b = sample_images(model, c, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (10, 784)


def test_image_grid_size():
    grid = image_grid([np.zeros((3, 28, 28)), np.ones((2, 28, 28))], ["a", "b"], scale=2)
    assert grid.size == (90 + 3 * (56 + 2) + 2, 2 * (56 + 2) + 2)
