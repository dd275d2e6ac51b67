"""What the Bernoulli-decoder CVAEs share (paper §2.1 and §2.2): sampling and the BCE + KL loss.

A subclass provides ``encode(x, c) -> (mu, logvar)`` and ``decode_logits(z, c)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def cvae_loss_terms(logits, x, mu, logvar) -> tuple[torch.Tensor, torch.Tensor]:
    """Negative ELBO terms, summed over pixels and batch.

    recon: BCE(sigmoid(logits), x) summed over pixels, computed from logits (same value,
    no log(0)). kl: KL(N(mu, sigma^2) || N(0, I)) in closed form, Kingma & Welling
    Appendix B: -0.5 * sum(1 + log sigma^2 - mu^2 - sigma^2).
    """
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return recon, kl


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))), summed over the last dimension."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mu).pow(2) / logvar.exp()).sum(-1)


class BernoulliCVAE(nn.Module):
    def log_likelihood(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z,c) per image (summed over the last dimension): Bernoulli on grey values."""
        return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)

    def decode(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1]: the sigmoid of the decoder's logits."""
        return self.images_from_logits(self.decode_logits(z, c))

    def images_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] from decoder logits (guided ones too: models/guidance.py)."""
        return torch.sigmoid(logits)

    def forward(self, x: torch.Tensor, c: torch.Tensor):
        mu, logvar = self.encode(x, c)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # reparameterisation
        return self.decode_logits(z, c), mu, logvar

    def batch_losses(self, x: torch.Tensor, c: torch.Tensor) -> dict[str, torch.Tensor]:
        """BCE + KL, summed over the batch: the training loop divides by the image count.

        Computed in float32 even under bf16 autocast.
        """
        logits, mu, logvar = self(x, c)
        recon, kl = cvae_loss_terms(logits.float(), x.float(), mu.float(), logvar.float())
        return {"loss": recon + kl, "recon": recon, "kl": kl}
