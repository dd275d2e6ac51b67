"""Fashion-MNIST CVAEs with a learned conditional prior (ours, beyond §2.1), conv or MLP.

Sohn, Lee & Yan (2015) write the conditional VAE with three networks: a recognition network
q(z|x,c), a generation network p(x|z,c) and a *prior* network p(z|c). The paper's §2.1 model
(``cvae_mlp``) fixes p(z|c) = N(0, I); here it is learned, and samples are drawn from it:

    condition  c (B, C) -> [train: + noise, dropout] -> fc (C -> H) -> ReLU      h (B, H)
    encoder    body(x) ++ h -> fc (-> 256) -> ReLU -> fc -> mu, logvar            (B, L) each
    prior      h -> fc (H -> H) -> ReLU -> fc -> mu_p, logvar_p                  (B, L) each
    decoder    fuse(z, h) -> fc -> ReLU -> head -> logits (B, 784)

    arch conv  body: x (B, 1, 28, 28) -> conv 4x4/2 (W) -> ReLU -> conv 4x4/2 (2W) -> ReLU
               -> flatten (2W*7*7); head: (2W, 7, 7) -> deconv 4x4/2 (W) -> ReLU
               -> deconv 4x4/2 (1)
    arch mlp   body: x (B, 784) -> fc (-> 8W) -> ReLU; head: fc (8W -> 784)

``prior: standard`` keeps N(0, I) (the paper's choice) with the same networks otherwise.
The loss is the negative ELBO with KL(q(z|x,c) || p(z|c)) in closed form. For text
conditions (caption embeddings), Gaussian noise (``cond_noise``, per coordinate) and dropout
(``cond_dropout``) on the embedding during training smooth the map from embedding to image,
so phrasings the model never saw land near the ones it did (a standard regulariser of
conditioning inputs, as in StackGAN's conditioning augmentation).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pipeline.models.base import Configured, ModelConfig
from pipeline.models.bernoulli import BernoulliCVAE
from pipeline.models.fusion import Fusion, FusionKind

PriorKind = Literal["learned", "standard"]
Arch = Literal["conv", "mlp"]
Likelihood = Literal["bernoulli", "continuous_bernoulli"]


class CVAEPriorConfig(ModelConfig):
    cond_dim: int = Field(ge=1, le=65_536, description="one-hot labels or embedding size")
    latent_dim: int = Field(ge=1, le=4096, description="size of z")
    width: int = Field(ge=1, le=1024, description="channels of the first conv (mlp: 8x units)")
    cond_hidden: int = Field(ge=1, le=65_536, description="units of the condition network")
    prior: PriorKind = Field(description="learned: p(z|c) from a network; standard: N(0, I)")
    fusion: FusionKind = Field(description="how the decoder joins z and the condition")
    cond_noise: float = Field(ge=0.0, le=10.0, description="training noise on the condition")
    cond_dropout: float = Field(ge=0.0, lt=1.0, description="training dropout on the condition")
    arch: Arch = Field(description="encoder/decoder bodies: conv or mlp")
    likelihood: Likelihood = Field(description="p(x|z,c) of the grey values")
    beta: float = Field(
        gt=0.0,
        le=100.0,
        description="weight of the KL term (1: the ELBO; below 1: a beta-VAE with sharper "
        "decodes, sampled through the ex-post density, docs/coverage.md)",
    )


class CVAEPrior(Configured, BernoulliCVAE):
    kind = "cvae_prior"  # config.json's "model"; pipeline/models/registry.py
    Config = CVAEPriorConfig

    def __init__(self, config: CVAEPriorConfig):
        super().__init__()
        self.config = config
        cond_dim, latent_dim, width = config.cond_dim, config.latent_dim, config.width
        cond_hidden, prior, fusion = config.cond_hidden, config.prior, config.fusion
        cond_noise, cond_dropout, arch = config.cond_noise, config.cond_dropout, config.arch
        self.latent_dim, self.cond_noise, self.likelihood = (
            latent_dim,
            cond_noise,
            config.likelihood,
        )
        self.beta = config.beta
        w = width
        flat = 2 * w * 7 * 7 if arch == "conv" else 8 * w
        self.cond = nn.Sequential(
            nn.Dropout(cond_dropout), nn.Linear(cond_dim, cond_hidden), nn.ReLU()
        )
        if arch == "conv":
            self.body = nn.Sequential(
                nn.Unflatten(1, (1, 28, 28)),
                nn.Conv2d(1, w, 4, 2, 1),
                nn.ReLU(),
                nn.Conv2d(w, 2 * w, 4, 2, 1),
                nn.ReLU(),
                nn.Flatten(),
            )
            self.head = nn.Sequential(
                nn.Unflatten(1, (2 * w, 7, 7)),
                nn.ConvTranspose2d(2 * w, w, 4, 2, 1),
                nn.ReLU(),
                nn.ConvTranspose2d(w, 1, 4, 2, 1),
                nn.Flatten(),
            )
        else:
            self.body = nn.Sequential(nn.Linear(784, flat), nn.ReLU())
            self.head = nn.Linear(flat, 784)
        self.enc_fc = nn.Sequential(nn.Linear(flat + cond_hidden, 256), nn.ReLU())
        self.enc_out = nn.Linear(256, 2 * latent_dim)
        self.prior_net = (
            nn.Sequential(
                nn.Linear(cond_hidden, cond_hidden),
                nn.ReLU(),
                nn.Linear(cond_hidden, 2 * latent_dim),
            )
            if prior == "learned"
            else None
        )
        self.fuse = Fusion(fusion, latent_dim, cond_hidden)
        self.dec_fc = nn.Sequential(nn.Linear(self.fuse.out_dim, flat), nn.ReLU())

    def condition(self, c: torch.Tensor) -> torch.Tensor:
        if self.training and self.cond_noise > 0:
            c = c + self.cond_noise * torch.randn_like(c)
        return self.cond(c)

    def prior(self, c: torch.Tensor, h: torch.Tensor | None = None):
        """(mu_p, logvar_p) of p(z|c); ``h``: ``condition(c)`` when already computed."""
        if self.prior_net is None:
            zeros = c.new_zeros(len(c), self.latent_dim)
            return zeros, zeros
        mu, logvar = self.prior_net(self.condition(c) if h is None else h).chunk(2, dim=-1)
        return mu, logvar

    def encode(self, x: torch.Tensor, c: torch.Tensor, h: torch.Tensor | None = None):
        """(mu, logvar) of q(z|x,c)."""
        h = self.condition(c) if h is None else h
        mu, logvar = self.enc_out(
            self.enc_fc(torch.cat([self.body(x.reshape(-1, 784)), h], dim=1))
        ).chunk(2, dim=-1)
        return mu, logvar

    def decode_logits(
        self, z: torch.Tensor, c: torch.Tensor, h: torch.Tensor | None = None
    ) -> torch.Tensor:
        lead = z.shape[:-1]  # (B,) or (k, B) in the importance-weighted bound
        z, c = z.reshape(-1, z.shape[-1]), c.reshape(-1, c.shape[-1])
        h = self.condition(c) if h is None else h.reshape(-1, h.shape[-1])
        return self.head(self.dec_fc(self.fuse(z, h))).reshape(*lead, 784)

    def batch_losses(self, x: torch.Tensor, c: torch.Tensor) -> dict[str, torch.Tensor]:
        """BCE + beta KL(q(z|x,c) || p(z|c)), summed over the batch (``loss``; ``kl`` is the
        unweighted KL, so recon + kl stays the -ELBO whatever beta is)."""
        h = self.condition(c)  # one noise draw per step for encoder, prior and decoder alike
        mu, logvar = self.encode(x, c, h)
        mu_p, logvar_p = self.prior(c, h)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        logits = self.decode_logits(z, c, h)
        recon = -self.log_likelihood(logits.float(), x.float()).sum()
        kl = gaussian_kl(mu, logvar, mu_p, logvar_p).sum()
        return {"loss": recon + self.beta * kl, "recon": recon, "kl": kl}

    def log_likelihood(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z,c) per image: Bernoulli on grey values, or the continuous Bernoulli
        (Loaiza-Ganem & Cunningham 2019), a proper density on [0, 1]: Bernoulli + log C."""
        log_p = -F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        if self.likelihood == "continuous_bernoulli":
            log_p = log_p + continuous_bernoulli_log_norm(logits)
        return log_p.sum(-1)

    def images_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1]: the mean of p(x|z,c) of these logits."""
        if self.likelihood == "continuous_bernoulli":
            return continuous_bernoulli_mean(logits)
        return torch.sigmoid(logits)


# The continuous Bernoulli with logit l = log(lambda / (1 - lambda)) has the density
# C(l) lambda^x (1 - lambda)^(1 - x) on [0, 1], that is, proportional to e^(l x). Both functions
# below are written in l, with their Taylor series where |l| is small.
_SMALL = 1e-2


def continuous_bernoulli_log_norm(logits: torch.Tensor) -> torch.Tensor:
    """log C(l) with C(l) = l / tanh(l / 2): what turns Bernoulli's x l - softplus(l) into a
    density on [0, 1]. Near 0, log C = log 2 + l^2 / 12 + O(l^4)."""
    a = logits.abs().clamp(min=_SMALL)
    exact = torch.log(a) - torch.log(torch.tanh(a / 2))
    return torch.where(logits.abs() < _SMALL, math.log(2.0) + logits.pow(2) / 12, exact)


def continuous_bernoulli_mean(logits: torch.Tensor) -> torch.Tensor:
    """E[x] = 1 / (1 - e^-l) - 1 / l; near 0, 1/2 + l / 12."""
    safe = torch.where(logits.abs() < _SMALL, torch.full_like(logits, _SMALL), logits)
    exact = -1.0 / torch.expm1(-safe) - 1.0 / safe
    return torch.where(logits.abs() < _SMALL, 0.5 + logits / 12, exact).clamp(0.0, 1.0)


def gaussian_kl(mu, logvar, mu_p, logvar_p) -> torch.Tensor:
    """KL(N(mu, e^logvar) || N(mu_p, e^logvar_p)) per row, summed over the latent dimension."""
    return 0.5 * (logvar_p - logvar + (logvar.exp() + (mu - mu_p).pow(2)) / logvar_p.exp() - 1).sum(
        -1
    )
