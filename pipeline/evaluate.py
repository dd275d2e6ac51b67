"""Metrics of a trained CVAE (paper §3.1, and the quantitative checks the paper lacks).

All likelihoods are in nats per image under the model's Bernoulli decoder applied to pixel
intensities in [0, 1]. Those are not binary, so the numbers are comparable across runs of this
project, not with binarised-MNIST results in the literature.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.models.bernoulli import cvae_loss_terms, log_normal
from pipeline.models.cvae_mlp import CVAEMLP


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@torch.no_grad()
def negative_elbo(
    model: CVAEMLP, x: torch.Tensor, c: torch.Tensor, batch_size: int = 500
) -> dict[str, float]:
    """Mean -ELBO = E_q[-log p(x|z,c)] + KL(q||p), one posterior sample per image."""
    model.eval()
    recon = kl = 0.0
    for part in _chunks(len(x), batch_size):
        logits, mu, logvar = model(x[part], c[part])
        r, k = cvae_loss_terms(logits, x[part], mu, logvar)
        recon, kl = recon + float(r), kl + float(k)
    n = len(x)
    return {"nelbo": (recon + kl) / n, "recon": recon / n, "kl": kl / n}


@torch.no_grad()
def importance_weighted_nll(
    model: CVAEMLP, x: torch.Tensor, c: torch.Tensor, k: int, batch_size: int = 500
) -> float:
    """Mean of -log (1/k) sum_i p(x, z_i | c) / q(z_i | x, c), z_i ~ q (Burda et al. 2016).

    An upper bound on -log p(x|c) that tightens as k grows; k = 1 is the -ELBO estimate.
    """
    model.eval()
    total = 0.0
    rows = max(1, batch_size // k)  # keep k * rows decoder passes per chunk
    for part in _chunks(len(x), rows):
        xb, cb = x[part], c[part]
        mu, logvar = model.encode(xb, cb)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(k, *mu.shape, device=mu.device)
        logits = model.decode_logits(z, cb.expand(k, *cb.shape))
        log_px_z = -F.binary_cross_entropy_with_logits(
            logits, xb.expand(k, *xb.shape), reduction="none"
        ).sum(-1)
        log_pz = log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
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
    model: CVAEMLP, conditions: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Decode z ~ N(0, I) under each condition row; returns (N, 784) in [0, 1]."""
    model.eval()
    z = torch.randn(len(conditions), model.latent_dim, generator=generator)
    return model.decode(z.to(conditions.device), conditions)


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
    model: torch.nn.Module, conditions: torch.Tensor, generator: torch.Generator, batch_size: int
) -> torch.Tensor:
    """``sample_images`` over ``conditions`` in batches: the same draws as one call."""
    parts = _chunks(len(conditions), batch_size)
    return torch.cat([sample_images(model, conditions[part], generator) for part in parts])


def hwc(images: torch.Tensor) -> np.ndarray:
    """(N, 3, S, S) images in [0, 1] -> (N, S, S, 3) numpy, as image_grid takes them."""
    return images.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()


def caption_sample_rows(
    model: torch.nn.Module, vectors: torch.Tensor, samples: int, generator: torch.Generator
) -> list[np.ndarray]:
    """One row of ``samples`` caption-only images (z ~ N(0, I)) per caption vector."""
    return [hwc(sample_images(model, v.expand(samples, -1), generator)) for v in vectors]
