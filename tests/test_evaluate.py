"""Metric correctness on inputs whose answer is known."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.evaluate import (
    Judging,
    conditional_accuracy,
    frechet_distance,
    importance_weighted_nll,
    mean_std,
    negative_elbo,
    real_vs_real_frechet,
    sample_images,
    seeded_sample_scores,
    summarise,
)
from pipeline.figures import image_grid
from pipeline.models.cvae_mlp import CVAEMLP
from pipeline.models.judge import JudgeCNN


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
    model = CVAEMLP.of(input_dim=784, cond_dim=10, hidden_dim=32, latent_dim=4, fusion="concat")
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
    model = CVAEMLP.of(input_dim=784, cond_dim=10, hidden_dim=16, latent_dim=4, fusion="concat")
    c = torch.eye(10)
    a = sample_images(model, c, torch.Generator().manual_seed(3))
    b = sample_images(model, c, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (10, 784)


def test_image_grid_size():
    grid = image_grid([np.zeros((3, 28, 28)), np.ones((2, 28, 28))], ["a", "b"], scale=2)
    assert grid.size == (90 + 3 * (56 + 2) + 2, 2 * (56 + 2) + 2)


def test_mean_std_and_summarise_keep_the_shape_of_per_seed_results():
    assert mean_std([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0}  # sample std, n - 1
    assert mean_std([5.0]) == {"mean": 5.0, "std": 0.0}
    runs = [{"overall": 0.5, "per_class": {"a": 0.25}}, {"overall": 0.7, "per_class": {"a": 0.75}}]
    summary = summarise(runs)
    assert summary["overall"]["mean"] == pytest.approx(0.6)
    assert summary["overall"]["std"] == pytest.approx(math.sqrt(0.02))
    assert summary["per_class"]["a"] == pytest.approx({"mean": 0.5, "std": math.sqrt(0.125)})


def test_real_vs_real_floor_is_small_for_one_distribution_and_seeds_vary_it():
    rng = np.random.default_rng(0)
    same = rng.normal(size=(4000, 8))
    floor = real_vs_real_frechet(same, [0, 1, 2])
    shifted = frechet_distance(same[:2000], rng.normal(size=(2000, 8)) + 1.0)
    assert 0 < floor["mean"] < 0.05 * shifted  # shifted by 1 in 8 dims: about 8
    assert floor["std"] > 0  # three different splits


def test_seeded_sample_scores_draw_one_set_per_seed():
    torch.manual_seed(0)
    model, judge = (
        CVAEMLP.of(input_dim=784, cond_dim=10, hidden_dim=16, latent_dim=4, fusion="concat"),
        JudgeCNN.of(num_classes=10, feature_dim=128),
    )
    intended = torch.arange(10).repeat_interleave(20)
    conditions = F.one_hot(intended, 10).float()
    real = np.random.default_rng(0).normal(size=(300, 128))
    judging = Judging(judge, real, list("abcdefghij"), 64)
    accuracy, frechet = seeded_sample_scores(model, conditions, intended, judging, [0, 1, 2], 1.0)
    assert set(accuracy) == {"overall", "per_class"} and set(accuracy["per_class"]) == set(
        "abcdefghij"
    )
    assert frechet["std"] > 0  # the sets differ
    # overall: the mean over the seeds of the share of samples the judge reads as intended
    # (and per class, over that class's 20 samples)
    hits = []
    for seed in (0, 1, 2):
        samples = sample_images(model, conditions, torch.Generator().manual_seed(seed))
        with torch.no_grad():
            hits.append((judge(samples).argmax(1) == intended).float())
    assert accuracy["overall"]["mean"] == pytest.approx(float(torch.stack(hits).mean()))
    for k, name in enumerate("abcdefghij"):
        share = torch.stack([h[intended == k].mean() for h in hits]).mean()
        assert accuracy["per_class"][name]["mean"] == pytest.approx(float(share)), name
    again, _ = seeded_sample_scores(model, conditions, intended, judging, [0, 1, 2], 1.0)
    assert again == accuracy  # and each is reproducible
