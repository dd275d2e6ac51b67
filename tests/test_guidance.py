"""Guidance (pipeline/models/guidance.py): condition dropout in training, guided decoding, and
the frontier that measures it (pipeline/frontier.py)."""

import gzip
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.data.batches import InMemoryBatches
from pipeline.data.fmnist import LABELS, parse_idx
from pipeline.errors import PipelineError
from pipeline.evaluate import Judging, sample_images
from pipeline.frontier import (
    NO_DROPOUT,
    RULE,
    FrontierScorer,
    choose_point,
    class_spread,
    plot_rows,
)
from pipeline.models.cvae_clip import CVAEClip
from pipeline.models.cvae_gated import CVAEGated
from pipeline.models.cvae_mlp import CVAEMLP
from pipeline.models.guidance import drop_conditions, guided_logits, null_condition
from pipeline.models.judge import JudgeCNN
from pipeline.train import BatchLosses, EpochOptions, train_one_epoch

from .conftest import fit_spec, tiny_prior

MODELS = {
    "cvae_mlp": lambda: CVAEMLP.of(
        input_dim=784, cond_dim=10, hidden_dim=32, latent_dim=4, fusion="concat"
    ),
    "cvae_prior": lambda: tiny_prior(latent_dim=4, arch="conv"),
    "cvae_prior_cb": lambda: tiny_prior(
        latent_dim=4, arch="conv", likelihood="continuous_bernoulli"
    ),
    "cvae_clip": lambda: CVAEClip.of(
        image_size=32,
        text_dim=10,
        latent_dim=4,
        width=4,
        fusion="concat",
        feature_norm=True,
        logvar_bound=8.0,
    ),
    "cvae_gated": lambda: CVAEGated.of(
        image_size=32, text_dim=10, latent_dim=4, fusion="gated", beta=1.0, logvar_bound=8.0
    ),
}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_guided_logits_are_the_plain_ones_at_w0_and_extrapolate_from_the_null(kind):
    torch.manual_seed(0)
    model = MODELS[kind]().eval()
    z, c = torch.randn(3, model.config.latent_dim), torch.eye(10)[:3]
    with torch.no_grad():
        plain = model.decode_logits(z, c)
        unconditional = model.decode_logits(z, torch.zeros_like(c))
        assert torch.equal(guided_logits(model, z, c, 0.0), plain)
        guided = guided_logits(model, z, c, 2.0)
        assert torch.allclose(guided, plain + 2.0 * (plain - unconditional), atol=1e-6)
        assert not torch.allclose(guided, plain)  # the null condition decodes differently
        # w = 0 samples are the decoder's own images, bit for bit
        generator = torch.Generator().manual_seed(1)
        images = sample_images(model, c, generator, 1.0, 0.0)
        z0 = torch.randn(3, model.config.latent_dim, generator=torch.Generator().manual_seed(1))
        if kind.startswith("cvae_prior"):
            mu, logvar = model.prior(c)
            z0 = mu + torch.exp(0.5 * logvar) * z0
        assert torch.equal(images, model.decode(z0, c))
        guided_images = sample_images(model, c, torch.Generator().manual_seed(1), 1.0, 2.0)
        assert torch.isfinite(guided_images).all()
        assert guided_images.min() >= 0 and guided_images.max() <= 1
        assert not torch.allclose(guided_images, images)


def test_the_gated_models_logits_are_the_input_of_its_tanh():
    torch.manual_seed(0)
    model = MODELS["cvae_gated"]().eval()
    z, c = torch.randn(2, 4), torch.randn(2, 10)
    with torch.no_grad():
        assert torch.equal(model.images_from_logits(model.decode_logits(z, c)), model.decode(z, c))


def test_condition_dropout_nulls_whole_rows_at_the_rate_p():
    torch.manual_seed(0)
    c = torch.randn(20_000, 7)
    dropped = drop_conditions(c, 0.1)
    nulled = (dropped == 0).all(1)
    kept = ~nulled
    assert torch.equal(dropped[kept], c[kept])  # a row is either untouched or all zeros
    # binomial std at n = 20,000, p = 0.1 is 0.0021: 0.01 is about 5 std
    assert abs(float(nulled.float().mean()) - 0.1) < 0.01
    assert torch.equal(null_condition(c), torch.zeros_like(c))


def test_condition_dropout_at_zero_draws_nothing():
    torch.manual_seed(3)
    state = torch.get_rng_state()
    c = torch.randn(5, 3)
    state = torch.get_rng_state()
    assert drop_conditions(c, 0.0) is c
    assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ValueError, match="cond_null_p"):
        drop_conditions(c, 1.0)


class _PlainLosses(nn.Module):
    """The loop's wrapper as it was before condition dropout existed."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *batch):
        return self.model.batch_losses(*batch)


@pytest.fixture(scope="module")
def fmnist_small(fmnist_gz_dir):
    def read(name, n):
        return parse_idx(gzip.decompress((fmnist_gz_dir / name).read_bytes()), name)[:n]

    x = torch.from_numpy(read("train-images-idx3-ubyte.gz", 1024).reshape(-1, 784) / 255.0)
    y = torch.from_numpy(read("train-labels-idx1-ubyte.gz", 1024).astype(np.int64))
    return x.float(), y


def _train(x, y, losses_of, epochs=1):
    torch.manual_seed(0)
    model = CVAEMLP.of(input_dim=784, cond_dim=10, hidden_dim=64, latent_dim=8, fusion="concat")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = InMemoryBatches(x, F.one_hot(y, 10).float(), batch_size=128)
    generator = torch.Generator().manual_seed(0)
    rows = [
        train_one_epoch(model, data, optimizer, generator, EpochOptions(losses=losses_of(model)))
        for _ in range(epochs)
    ]
    return model, rows


def test_cond_null_p_zero_trains_bit_identical_weights_to_the_loop_without_it(fmnist_small):
    x, y = fmnist_small
    plain, _ = _train(x, y, _PlainLosses)
    zero, _ = _train(x, y, lambda m: BatchLosses(m, 0.0))
    dropped, _ = _train(x, y, lambda m: BatchLosses(m, 0.3))
    weights = [list(m.state_dict().values()) for m in (plain, zero, dropped)]
    assert all(torch.equal(a, b) for a, b in zip(weights[0], weights[1], strict=True))
    assert not all(torch.equal(a, d) for a, d in zip(weights[0], weights[2], strict=True))


def test_training_with_condition_dropout_lowers_the_loss_and_learns_a_null(fmnist_small):
    x, y = fmnist_small
    model, rows = _train(x, y, lambda m: BatchLosses(m, 0.2), epochs=3)
    losses = [r["loss"] for r in rows]
    assert all(math.isfinite(v) for v in losses) and losses[2] < losses[0]
    model.eval()
    with torch.no_grad():  # the null condition reconstructs real images: it was trained
        null_terms = model.batch_losses(x[:256], torch.zeros(256, 10))
        label_terms = model.batch_losses(x[:256], F.one_hot(y[:256], 10).float())
    assert float(null_terms["loss"]) / 256 < 1.2 * float(label_terms["loss"]) / 256


def test_class_spread_is_the_mean_distance_to_the_class_centroid():
    features = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 5.0], [0.0, 9.0], [0.0, 7.0]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    # class 0: centroid (1, 0), distances 1, 1; class 1: centroid (0, 7), distances 2, 2, 0
    assert class_spread(features, labels) == pytest.approx((1 + 1 + 2 + 2 + 0) / 5)


def _point(w, accuracy, frechet, cas=0.8, sampler="prior"):
    ms = lambda v: {"mean": v, "std": 0.0}  # noqa: E731
    return {
        "sampler": sampler,
        "guidance": w,
        "temperature": 1.0,
        "accuracy": {"overall": ms(accuracy), "per_class": {}},
        "frechet": ms(frechet),
        "spread": ms(10.0),
        "cas": cas,
    }


def test_w_is_the_most_accurate_whose_fd_is_not_worse_than_unguided():
    points = [_point(0.0, 0.70, 280), _point(1.0, 0.81, 170), _point(2.0, 0.83, 190)]
    points.append(_point(3.0, 0.90, 300))  # most accurate, but FD above w = 0's: not allowed
    rule = RULE.format(tolerance="0.01", t="1")
    free = (None, None, None)
    assert choose_point(points, True, free, 0.01) == ("prior", 2.0, 1.0, rule)
    assert choose_point(points, False, free, 0.01) == ("prior", 0.0, 1.0, f"{rule}; {NO_DROPOUT}")
    assert choose_point(points, True, ("prior", 0.5, 1.0), 0.01)[:3] == ("prior", 0.5, 1.0)
    rows = plot_rows(points, 17.1)
    assert rows[1] == {
        "sampler": "prior",
        "guidance": 1.0,
        "temperature": 1.0,
        "accuracy": 0.81,
        "accuracy_std": 0.0,
        "frechet": 170,
        "frechet_std": 0.0,
        "spread": 10.0,
        "spread_std": 0.0,
        "real_spread": 17.1,
    }


def test_the_rule_keeps_coverage_a_point_whose_validation_cas_falls_is_not_chosen():
    """Good on both axes: among points within the tolerance of the best validation CAS (and
    FD not above the prior's at w = 0, T = 1), the most accurate; the sampler and T are
    chosen like w."""
    points = [
        _point(0.0, 0.78, 170, cas=0.80),
        _point(1.0, 0.88, 120, cas=0.70),  # faithful, but its CAS falls: refused
        _point(0.0, 0.86, 90, cas=0.805, sampler="expost"),
        _point(1.0, 0.93, 80, cas=0.79, sampler="expost"),  # 0.015 below the best: refused
        {**_point(0.0, 0.84, 85, cas=0.81, sampler="expost"), "temperature": 1.2},
    ]
    free = (None, None, None)
    assert choose_point(points, True, free, 0.01)[:3] == ("expost", 0.0, 1.0)
    assert choose_point(points, True, free, 0.02)[:3] == ("expost", 1.0, 1.0)
    assert choose_point(points, True, (None, None, 1.2), 0.01)[:3] == ("expost", 0.0, 1.2)
    assert choose_point(points, True, ("prior", None, None), 0.01)[:3] == ("prior", 0.0, 1.0)
    assert choose_point(points, False, free, 0.01)[:3] == ("expost", 0.0, 1.0)
    with pytest.raises(PipelineError, match="cannot be guided"):
        choose_point(points, False, (None, 1.0, None), 0.01)


def test_the_sampler_axis_draws_z_from_the_ex_post_density():
    """The expost points decode z from the fitted mixtures: other samples than the prior's at
    the same seed, every point once, with its keys; the validation scorer adds a real CAS."""
    from pipeline.frontier import ValidationCas
    from pipeline.latent_density import ExPostDensity

    torch.manual_seed(0)
    model = tiny_prior(latent_dim=4, prior="standard").eval()
    judge = JudgeCNN.of(num_classes=10, feature_dim=128).eval()
    y = torch.arange(10).repeat_interleave(8)
    x = torch.rand(len(y), 784)
    density = ExPostDensity.fit(model, x, y, 10, components=2, seed=0)
    intended = torch.arange(10).repeat_interleave(4)
    real = np.random.default_rng(0).normal(size=(200, 128))
    spec = fit_spec(epochs=1, batch_size=16)
    cas = ValidationCas((x, y), spec, 128)
    scorer = FrontierScorer(
        model,
        F.one_hot(intended, 10).float(),
        intended,
        Judging(judge, real, LABELS, 20),
        [0, 1],
        density,
        cas,
    )
    points = scorer.sweep([0.0], [1.0], ["prior", "expost"])
    assert [p["sampler"] for p in points] == ["prior", "expost"]
    assert points[0]["frechet"] != points[1]["frechet"]
    assert all(0.0 <= p["cas"] <= 1.0 for p in points)
    assert scorer.point(0.0, 1.0, "expost") is points[1]
    bare = FrontierScorer(model, F.one_hot(intended, 10).float(), intended, scorer.judging, [0])
    with pytest.raises(PipelineError, match="no ex-post density"):
        bare.sweep([0.0], [1.0], ["expost"])


def test_the_frontier_scores_every_point_finite_with_its_keys():
    torch.manual_seed(0)
    model, judge = (
        tiny_prior(latent_dim=4, prior="standard").eval(),
        JudgeCNN.of(num_classes=10, feature_dim=128).eval(),
    )
    intended = torch.arange(10).repeat_interleave(6)
    real = np.random.default_rng(0).normal(size=(200, 128))
    judging = Judging(judge, real, LABELS, 30)
    scorer = FrontierScorer(model, F.one_hot(intended, 10).float(), intended, judging, [0, 1])
    points = scorer.sweep([0.0, 1.0], [1.0, 0.8])
    assert [(p["guidance"], p["temperature"]) for p in points] == [
        (0.0, 1.0),
        (1.0, 1.0),
        (0.0, 0.8),
        (1.0, 0.8),
    ]
    for p in points:
        assert set(p) == {"sampler", "guidance", "temperature", "accuracy", "frechet", "spread"}
        assert set(p["accuracy"]["per_class"]) == set(LABELS)
        values = [p["frechet"]["mean"], p["spread"]["mean"], p["accuracy"]["overall"]["mean"]]
        assert all(math.isfinite(v) for v in values) and p["frechet"]["mean"] > 0
    assert scorer.point(1.0, 0.8) is points[3]  # computed once
    assert points[0]["frechet"] != points[1]["frechet"]  # guidance changes the samples


def test_the_report_draws_the_frontier_one_line_per_temperature_with_w_labels():
    from pipeline.report import render_index, render_report

    rows = plot_rows([_point(0.0, 0.70, 280), _point(1.0, 0.81, 170), _point(2.0, 0.83, 190)], 17.1)
    rows += [{**r, "temperature": 0.8, "accuracy": r["accuracy"] + 0.02} for r in rows]
    page = render_report("t", {}, {}, {}, frontier=rows)
    assert page.count("<circle class='point'") == 6
    assert "data-series='T=1'" in page and "data-series='T=0.8'" in page
    assert ">w=2</text>" in page and "Guidance frontier" in page
    assert "Guidance frontier" not in render_report("t", {}, {}, {})
    index = render_index("i", {"a": {}, "b": {}}, {}, {}, {}, {"a": rows, "b": rows[:3]})
    assert index.count("<circle class='point'") == 9
    assert "data-series='a T=0.8'" in index and "data-series='b T=1'" in index


def test_the_sweep_scores_exactly_what_sample_images_draws_and_w0_is_the_old_score():
    """The sweep decodes each z once with c and once with the null and mixes the logits per
    w: its numbers are those of scoring ``sample_images`` at each w, and at w = 0 those of
    ``seeded_sample_scores`` (the evaluation before guidance), bit for bit."""
    from pipeline.evaluate import (
        Judging,
        conditional_accuracy,
        frechet_distance,
        judge_outputs,
        mean_std,
        seeded_sample_scores,
        summarise,
    )

    torch.manual_seed(0)
    model, judge = (
        CVAEMLP.of(input_dim=784, cond_dim=10, hidden_dim=32, latent_dim=4, fusion="concat").eval(),
        JudgeCNN.of(num_classes=10, feature_dim=128).eval(),
    )
    intended = torch.arange(10).repeat_interleave(5)
    conditions = F.one_hot(intended, 10).float()
    real = np.random.default_rng(1).normal(size=(100, 128))
    scorer = FrontierScorer(model, conditions, intended, Judging(judge, real, LABELS, 50), [3, 4])
    points = scorer.sweep([0.0, 2.0], [0.8])
    judging = Judging(judge, real, LABELS, 50)
    accuracy, frechet = seeded_sample_scores(model, conditions, intended, judging, [3, 4], 0.8)
    assert points[0]["accuracy"] == accuracy and points[0]["frechet"] == frechet
    accuracy, frechet = [], []
    for seed in (3, 4):
        images = sample_images(model, conditions, torch.Generator().manual_seed(seed), 0.8, 2.0)
        predicted, features = judge_outputs(judge, images, 50)
        accuracy.append(conditional_accuracy(predicted, intended, LABELS))
        frechet.append(frechet_distance(features, real))
    assert points[1]["accuracy"] == summarise(accuracy)
    assert points[1]["frechet"] == mean_std(frechet)
    assert points[1]["frechet"] != points[0]["frechet"]
