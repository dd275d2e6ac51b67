"""The Fashion-MNIST conditional VAE of paper §2.1 (after Sohn et al. 2015).

Shapes, with D = 784 pixels, C = condition size (10 one-hot labels), H = hidden, L = latent:

    encoder  [x (B, D), c (B, C)] -> fc1 (D+C -> H) -> ReLU -> fc2_mean, fc2_logvar (H -> L)
    sample   z = mu + sigma * eps,  eps ~ N(0, I)                      (reparameterisation)
    decoder  [z (B, L), c (B, C)] -> fc3 (L+C -> H) -> ReLU -> fc4 (H -> D) -> sigmoid

The paper gives neither H nor L; we default to H = 400 and L = 20 (params.yaml), the sizes of
Kingma & Welling's MNIST experiments.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class CVAEMLP(nn.Module):
    def __init__(
        self, input_dim: int = 784, cond_dim: int = 10, hidden_dim: int = 400, latent_dim: int = 20
    ):
        super().__init__()
        self.input_dim, self.cond_dim = input_dim, cond_dim
        self.hidden_dim, self.latent_dim = hidden_dim, latent_dim
        self.fc1 = nn.Linear(input_dim + cond_dim, hidden_dim)
        self.fc2_mean = nn.Linear(hidden_dim, latent_dim)
        self.fc2_logvar = nn.Linear(hidden_dim, latent_dim)
        self.fc3 = nn.Linear(latent_dim + cond_dim, hidden_dim)
        self.fc4 = nn.Linear(hidden_dim, input_dim)

    def config(self) -> dict:
        return {
            "model": "cvae_mlp",
            "input_dim": self.input_dim,
            "cond_dim": self.cond_dim,
            "hidden_dim": self.hidden_dim,
            "latent_dim": self.latent_dim,
        }

    def encode(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc1(torch.cat([x, c], dim=1)))
        return self.fc2_mean(h), self.fc2_logvar(h)

    def decode_logits(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid outputs; the loss works on these for numerical stability."""
        return self.fc4(F.relu(self.fc3(torch.cat([z, c], dim=-1))))

    def decode(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(z, c))

    def forward(self, x: torch.Tensor, c: torch.Tensor):
        mu, logvar = self.encode(x, c)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.decode_logits(z, c), mu, logvar

    def batch_losses(self, x: torch.Tensor, c: torch.Tensor) -> dict[str, torch.Tensor]:
        """Summed over the batch: the training loop divides by the image count."""
        logits, mu, logvar = self(x, c)
        recon, kl = cvae_loss_terms(logits, x, mu, logvar)
        return {"loss": recon + kl, "recon": recon, "kl": kl}


def cvae_loss_terms(logits, x, mu, logvar) -> tuple[torch.Tensor, torch.Tensor]:
    """Negative ELBO terms of §2.1, summed over pixels and batch.

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
