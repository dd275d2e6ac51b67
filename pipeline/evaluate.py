"""Metrics of a trained CVAE (paper §3.1, and the quantitative checks the paper lacks).

All likelihoods are in nats per image under the model's Bernoulli decoder applied to pixel
intensities in [0, 1]. Those are not binary, so the numbers are comparable across runs of this
project, not with binarised-MNIST results in the literature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.finite import require_finite_tensor
from pipeline.latent_density import one_hot_labels
from pipeline.models.bernoulli import log_normal
from pipeline.models.guidance import guided_decode


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def prior(model: torch.nn.Module, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar) of the model's p(z|c): its prior network's, or N(0, I) (the paper's)."""
    if hasattr(model, "prior"):
        return model.prior(c)
    zeros = torch.zeros(len(c), model.config.latent_dim, device=c.device)
    return zeros, zeros


@torch.no_grad()
def negative_elbo(
    model: torch.nn.Module, x: torch.Tensor, c: torch.Tensor, batch_size: int = 500
) -> dict[str, float]:
    """Mean -ELBO = E_q[-log p(x|z,c)] + KL(q||p(z|c)), one posterior sample per image: the
    model's own loss terms in eval mode."""
    model.eval()
    recon = kl = 0.0
    for part in _chunks(len(x), batch_size):
        terms = model.batch_losses(x[part], c[part])
        recon, kl = recon + float(terms["recon"]), kl + float(terms["kl"])
    n = len(x)
    return {"nelbo": (recon + kl) / n, "recon": recon / n, "kl": kl / n}


@torch.no_grad()
def importance_weighted_nll(
    model: torch.nn.Module, x: torch.Tensor, c: torch.Tensor, k: int, batch_size: int = 500
) -> float:
    """Mean of -log (1/k) sum_i p(x, z_i | c) / q(z_i | x, c), z_i ~ q (Burda et al. 2016).

    An upper bound on -log p(x|c) that tightens as k grows; k = 1 is the -ELBO estimate.
    p(z|c) is the model's prior: N(0, I), or its prior network's.
    """
    model.eval()
    total = 0.0
    rows = max(1, batch_size // k)  # keep k * rows decoder passes per chunk
    for part in _chunks(len(x), rows):
        xb, cb = x[part], c[part]
        mu, logvar = model.encode(xb, cb)
        mu_p, logvar_p = prior(model, cb)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(k, *mu.shape, device=mu.device)
        logits = model.decode_logits(z, cb.expand(k, *cb.shape))
        log_px_z = model.log_likelihood(logits, xb.expand(k, *xb.shape))
        log_pz = log_normal(z, mu_p.expand_as(z), logvar_p.expand_as(z))
        log_qz = log_normal(z, mu, logvar)
        log_w = log_px_z + log_pz - log_qz  # (k, rows)
        total += float((torch.logsumexp(log_w, 0) - math.log(k)).sum())
    return -total / len(x)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussian fits of a and b.

    tr((S_a S_b)^(1/2)) is the sum of the square roots of the eigenvalues of
    S_a^(1/2) S_b S_a^(1/2), a symmetric PSD matrix, so eigh suffices (no scipy sqrtm).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    vals, vecs = np.linalg.eigh(cov_a)
    root_a = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = np.sqrt(np.clip(cross, 0, None)).sum()
    value = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root
    return float(max(value, 0.0))


@torch.no_grad()
def sample_images(
    model: torch.nn.Module,
    conditions: torch.Tensor,
    generator: torch.Generator,
    temperature: float = 1.0,
    guidance: float = 0.0,
    density=None,
) -> torch.Tensor:
    """Decode z ~ p(z|c) under each condition row, its spread scaled by ``temperature``
    (z = mu_p + T sigma_p eps; T = 1: the prior itself), with guidance ``w``
    (pipeline/models/guidance.py; 0: the plain decoder); returns (N, 784) in [0, 1].
    ``density``: an ExPostDensity (pipeline/latent_density.py) to draw z from instead of
    the prior (sampler expost; one-hot conditions)."""
    if density is not None:
        z = draw_latents(model, conditions, generator, temperature, density)
        model.eval()
        return guided_decode(model, z, conditions, guidance)
    eps = torch.randn(len(conditions), model.config.latent_dim, generator=generator)
    return decode_noise(model, conditions, eps, temperature, guidance)


@torch.no_grad()
def decode_noise(
    model: torch.nn.Module,
    conditions: torch.Tensor,
    eps: torch.Tensor,
    temperature: float = 1.0,
    guidance: float = 0.0,
) -> torch.Tensor:
    """``sample_images`` for given standard-normal draws ``eps`` (one row per condition row)."""
    model.eval()
    return guided_decode(model, _latents(model, conditions, eps, temperature), conditions, guidance)


@torch.no_grad()
def draw_latents(
    model: torch.nn.Module,
    conditions: torch.Tensor,
    generator: torch.Generator,
    temperature: float,
    density=None,
) -> torch.Tensor:
    """z = mu_p + T sigma_p eps under each condition row, eps from ``generator``; with an
    ex-post ``density``, z from its mixture of each row's class, its spread scaled by T."""
    if density is not None:
        labels = one_hot_labels(conditions)
        return density.sample(labels, generator, temperature).to(conditions.device)
    eps = torch.randn(len(conditions), model.config.latent_dim, generator=generator)
    return _latents(model, conditions, eps, temperature)


def _latents(model, conditions: torch.Tensor, eps: torch.Tensor, temperature: float):
    mu, logvar = prior(model, conditions)
    return mu + temperature * torch.exp(0.5 * logvar) * eps.to(mu.device)


@torch.no_grad()
def judge_outputs(
    judge: torch.nn.Module, x: torch.Tensor, batch_size: int = 500
) -> tuple[torch.Tensor, np.ndarray]:
    """(predicted classes, features) of images x (N, 784)."""
    judge.eval()
    preds, feats = [], []
    for part in _chunks(len(x), batch_size):
        f = judge.features(x[part])
        preds.append(judge.head(f).argmax(1).cpu())
        feats.append(f.cpu())
    return torch.cat(preds), torch.cat(feats).numpy()


def conditional_accuracy(predicted: torch.Tensor, intended: torch.Tensor, names: list[str]) -> dict:
    """Share of samples the judge assigns to the class they were generated for."""
    hits = (predicted == intended.cpu()).float()
    per_class = {
        names[i]: float(hits[intended.cpu() == i].mean())
        for i in range(len(names))
        if bool((intended == i).any())
    }
    return {"overall": float(hits.mean()), "per_class": per_class}


@torch.no_grad()
def posterior_mean_reconstructions(
    model: torch.nn.Module, x: torch.Tensor, c: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """decoder(posterior mean, condition) of each image: the reconstruction the metrics score."""
    model.eval()
    parts = []
    for part in _chunks(len(x), batch_size):
        mu, _ = model.encode(x[part], c[part])
        parts.append(model.decode(mu, c[part]))
    return torch.cat(parts)


def sample_in_batches(
    model: torch.nn.Module,
    conditions: torch.Tensor,
    generator: torch.Generator,
    batch_size: int,
    temperature: float = 1.0,
    guidance: float = 0.0,
    density=None,
) -> torch.Tensor:
    """``sample_images`` over ``conditions`` in batches (``density``: sampler expost)."""
    parts = _chunks(len(conditions), batch_size)
    at = (temperature, guidance, density)
    return torch.cat([sample_images(model, conditions[part], generator, *at) for part in parts])


def hwc(images: torch.Tensor) -> np.ndarray:
    """(N, 3, S, S) images in [0, 1] -> (N, S, S, 3) numpy, as image_grid takes them."""
    return images.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()


def caption_sample_rows(
    model: torch.nn.Module,
    vectors: torch.Tensor,
    samples: int,
    generator: torch.Generator,
    temperature: float = 1.0,
    guidance: float = 0.0,
) -> list[np.ndarray]:
    """One row of ``samples`` caption-only images (z ~ N(0, T^2 I), guidance w) per caption."""
    return [
        hwc(sample_images(model, v.expand(samples, -1), generator, temperature, guidance))
        for v in vectors
    ]


def mean_std(values: list[float]) -> dict[str, float]:
    """{"mean", "std"} of per-seed values; std is the sample standard deviation (n - 1), 0.0
    for a single value."""
    a = np.asarray(values, np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0}


def summarise(runs: list):
    """Per-seed results of one shape (numbers, nested in dicts) -> the same shape with each
    number replaced by its {"mean", "std"} over the seeds."""
    first = runs[0]
    if isinstance(first, dict):
        return {key: summarise([run[key] for run in runs]) for key in first}
    return mean_std([float(run) for run in runs])


def real_vs_real_frechet(features: np.ndarray, seeds: list[int]) -> dict[str, float]:
    """Fréchet distance between two disjoint random halves of the real test set, per seed: the
    floor a perfect generator would reach with as many images as a half holds."""
    values = []
    for seed in seeds:
        order = np.random.default_rng(seed).permutation(len(features))
        half = len(features) // 2
        values.append(frechet_distance(features[order[:half]], features[order[half:]]))
    return mean_std(values)


def per_class_accuracy(predicted: torch.Tensor, labels: torch.Tensor, names: list[str]) -> dict:
    """The judge's accuracy on real images of each class: what sample accuracy compares with."""
    return conditional_accuracy(predicted, labels, names)["per_class"]


@dataclass(frozen=True)
class Judging:
    """How a sample set is judged: by ``judge`` (run in batches of ``batch_size``), its
    predictions read as the classes ``names``, its features compared with ``real_features``."""

    judge: torch.nn.Module
    real_features: np.ndarray
    names: list[str]
    batch_size: int = 500


def seeded_sample_scores(
    model,
    conditions: torch.Tensor,
    intended: torch.Tensor,
    judging: Judging,
    seeds: list[int],
    temperature: float,
) -> tuple[dict, dict]:
    """One sample set per seed under ``conditions``: the judge's accuracy against ``intended``
    (overall and per class) and the Fréchet distance of its features to the real ones, each
    as {"mean", "std"} over the seeds."""
    accuracy, frechet = [], []
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        samples = sample_images(model, conditions, generator, temperature)
        require_finite_tensor(samples, f"samples of seed {seed}")  # never scored
        predicted, features = judge_outputs(judging.judge, samples, judging.batch_size)
        accuracy.append(conditional_accuracy(predicted, intended, judging.names))
        frechet.append(frechet_distance(features, judging.real_features))
    return summarise(accuracy), mean_std(frechet)
