"""Ex-post latent density: sample a trained CVAE where its decoder was trained (issue 20, part 3).

A VAE trained with the N(0, I) prior leaves "holes": regions the prior covers but the
aggregate posterior does not, whose decodes are incoherent, and dense regions the prior
under-samples, so hard real cases (a sandal's straps, a shirt's placket) are drawn too
rarely. Ghosh et al. (2020, "From Variational to Deterministic Autoencoders", ex-post
density estimation) fit a Gaussian mixture to the posterior means of the training images
after training and sample z from it instead of the prior; Dai & Wipf's two-stage VAE (2019)
is the same idea with a second VAE. Here one mixture is fitted per class, so a sample of
class k draws z from where class k's training images lie:

    fit     mu(x_i, c_i) = E q(z|x_i, c_i) over the training images; per class k a
            Gaussian mixture (J components, full covariances) on {mu_i : y_i = k}, by EM
            from a k-means start (``gaussian_mixture``, in torch, float64)
    sample  component j ~ Categorical(weights_k); z = mean_kj + T chol(cov_kj) eps

Measured in benchmarks/coverage_probe.py (docs/coverage.md): on the conv CVAE it raises judge
accuracy, lowers judge-feature FD, widens the within-class spread and raises CAS, with no
retraining (that run fitted the mixtures with scikit-learn's GaussianMixture, the same
model, EM and k-means start; this torch EM is not bit-identical to it). The model must have
``encode(x, c) -> (mu, logvar)`` and ``decode(z, c)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

REG_COVAR = 1e-6  # added to every covariance's diagonal: no component collapses onto a point


def _kmeans(x: torch.Tensor, k: int, generator: torch.Generator, steps: int = 20):
    """Cluster index (N,) of each row of ``x`` after k-means++ seeding and Lloyd steps."""
    centres = x[torch.randint(len(x), (1,), generator=generator)]
    for _ in range(1, k):
        d2 = torch.cdist(x, centres).min(1).values.pow(2)
        odds = d2 if d2.sum() > 0 else torch.ones_like(d2)  # all rows equal: any of them
        pick = torch.multinomial(odds, 1, generator=generator)
        centres = torch.cat([centres, x[pick]])
    for _ in range(steps):
        assign = torch.cdist(x, centres).argmin(1)
        for j in range(k):
            members = x[assign == j]
            if len(members):  # an empty cluster keeps its centre
                centres[j] = members.mean(0)
    return torch.cdist(x, centres).argmin(1)


def _m_step(x: torch.Tensor, resp: torch.Tensor):
    """(weights (J,), means (J, L), covariances (J, L, L)) from responsibilities (N, J)."""
    n_k = resp.sum(0) + 10 * torch.finfo(x.dtype).eps
    means = resp.T @ x / n_k[:, None]
    diff = x[None] - means[:, None]  # (J, N, L)
    cov = torch.einsum("jn,jnl,jnm->jlm", resp.T, diff, diff) / n_k[:, None, None]
    cov = cov + REG_COVAR * torch.eye(x.shape[1], dtype=x.dtype)
    return n_k / len(x), means, cov


def _log_joint(x: torch.Tensor, weights, means, chol) -> torch.Tensor:
    """(N, J): log w_j + log N(x_n; mean_j, chol_j chol_j^T)."""
    diff = (x[None] - means[:, None]).transpose(1, 2)  # (J, L, N)
    white = torch.linalg.solve_triangular(chol, diff, upper=False)
    log_det = 2 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(1)
    maha = white.pow(2).sum(1).T  # (N, J)
    return torch.log(weights) - 0.5 * (x.shape[1] * math.log(2 * math.pi) + log_det + maha)


def gaussian_mixture(
    x: torch.Tensor, components: int, seed: int, max_iter: int = 100, tol: float = 1e-3
):
    """Maximum-likelihood mixture of ``components`` full-covariance Gaussians on the rows of
    ``x`` (N, L) by EM, started from k-means (the recipe of scikit-learn's GaussianMixture):
    (weights (J,), means (J, L), Cholesky factors (J, L, L)), float64. EM stops when the mean
    log-likelihood moves by less than ``tol``."""
    x = x.double()
    generator = torch.Generator().manual_seed(seed)
    resp = F.one_hot(_kmeans(x, components, generator), components).double()
    weights, means, cov = _m_step(x, resp)
    previous = -math.inf
    for _ in range(max_iter):
        log_joint = _log_joint(x, weights, means, torch.linalg.cholesky(cov))
        log_px = torch.logsumexp(log_joint, 1)
        weights, means, cov = _m_step(x, torch.exp(log_joint - log_px[:, None]))
        current = float(log_px.mean())
        if abs(current - previous) < tol:
            break
        previous = current
    return weights, means, torch.linalg.cholesky(cov)


class ExPostDensity:
    """Per-class Gaussian mixtures over latent codes; ``sample`` draws z for given classes."""

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, chol: torch.Tensor):
        # (K, J) mixture weights, (K, J, L) means, (K, J, L, L) Cholesky factors of covariances
        self.weights, self.means, self.chol = weights, means, chol

    @classmethod
    def fit_codes(
        cls, codes: torch.Tensor, labels: torch.Tensor, num_classes: int, components: int, seed: int
    ) -> ExPostDensity:
        """Fit the mixtures to ``codes`` (N, L) grouped by ``labels`` (N,) in 0..num_classes-1."""
        weights, means, chol = [], [], []
        for k in range(num_classes):
            rows = codes[labels == k].detach().cpu()
            if len(rows) < 2 * components:
                raise ValueError(
                    f"class {k} has {len(rows)} codes: too few for {components} components"
                )
            w, m, lower = gaussian_mixture(rows, components, seed)
            weights.append(w)
            means.append(m)
            chol.append(lower)
        return cls(
            torch.stack(weights).float(), torch.stack(means).float(), torch.stack(chol).float()
        )

    @classmethod
    @torch.no_grad()
    def fit(
        cls,
        model: torch.nn.Module,
        x: torch.Tensor,
        labels: torch.Tensor,
        num_classes: int,
        components: int = 10,
        seed: int = 0,
        batch_size: int = 1000,
    ) -> ExPostDensity:
        """Mixtures over the posterior means of images ``x`` (N, 784) under their one-hot labels."""
        model.eval()
        c = F.one_hot(labels, num_classes).float()
        mu = torch.cat(
            [
                model.encode(x[s : s + batch_size], c[s : s + batch_size])[0]
                for s in range(0, len(x), batch_size)
            ]
        )
        return cls.fit_codes(mu, labels, num_classes, components, seed)

    def sample(
        self, labels: torch.Tensor, generator: torch.Generator, temperature: float = 1.0
    ) -> torch.Tensor:
        """z (N, L) for classes ``labels`` (N,): a component of each class's mixture, then a
        draw from it with its spread scaled by ``temperature``."""
        labels = labels.cpu()
        pick = torch.multinomial(self.weights[labels], 1, generator=generator).squeeze(1)
        eps = torch.randn(len(labels), self.means.shape[-1], 1, generator=generator)
        noise = (self.chol[labels, pick] @ eps).squeeze(-1)
        return self.means[labels, pick] + temperature * noise

    @torch.no_grad()
    def decode(
        self,
        model: torch.nn.Module,
        labels: torch.Tensor,
        generator: torch.Generator,
        temperature: float = 1.0,
        batch_size: int = 1000,
    ) -> torch.Tensor:
        """Images (N, 784) in [0, 1]: ``model.decode`` of z drawn for each label."""
        model.eval()
        z = self.sample(labels, generator, temperature)
        c = F.one_hot(labels, self.means.shape[0]).float()
        return torch.cat(
            [
                model.decode(z[s : s + batch_size], c[s : s + batch_size])
                for s in range(0, len(z), batch_size)
            ]
        )
