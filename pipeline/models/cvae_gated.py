"""COCO model 2 (paper §2.3): a conv CVAE with T5-small caption features and gated fusion.

Shapes at S = 224 (any S divisible by 4; tests use 32):

    image encoder  x (B, 3, S, S) in [-1, 1] -> conv 64 k4 s2 p1 -> LeakyReLU(0.2)
                   -> conv 128 k4 s2 p1 -> LeakyReLU(0.2) -> (B, 128, S/4, S/4)
                   flatten -> FC mu, FC log sigma^2         z_img (B, 128); log sigma^2 softly
                   bounded to [-logvar_bound, logvar_bound] (not in the paper)
    text           T5 caption features (B, 512) -> FC -> z_text (B, 128)
    fusion         gated (the paper): g = sigmoid(W_g [z_img, z_text] + b_g),
                   z = g * z_img + (1 - g) * z_text;  or add / concat (fusion.py)
    decoder        FC -> (B, 128, S/4, S/4) -> deconv 64 k4 s2 p1 -> LeakyReLU(0.2)
                   -> deconv 3 k4 s2 p1 -> tanh               (B, 3, S, S) in [-1, 1]
    loss           MSE summed over pixels + beta * KL

The paper gives the conv layers, the 128-d latent, the fusion and tanh; the activations and
the mirrored decoder are our choices. Caption-only generation draws z_img ~ N(0, I).

Changed against the paper, for stability at its own optimiser settings (Adam, lr 1e-3): the
bounded log-variance, plus the training loop's warmup. Without them the 401,408-input heads'
outputs jump by tens per Adam step and the KL per image swings between 1e3 and 1e13
(stability.py explains why). ``logvar_bound=None`` gives the paper's architecture exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.fusion import Fusion
from pipeline.models.stability import soft_bound


class CVAEGated(nn.Module):
    kind = "cvae_gated"  # config.json's "model"; pipeline/models/registry.py

    def __init__(
        self,
        image_size: int = 224,
        text_dim: int = 512,
        latent_dim: int = 128,
        fusion: str = "gated",
        beta: float = 1.0,
        logvar_bound: float | None = 8.0,
    ):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size {image_size} must be divisible by 4")
        self.image_size, self.text_dim, self.latent_dim = image_size, text_dim, latent_dim
        self.fusion_kind, self.beta = fusion, beta
        self.logvar_bound = logvar_bound
        side = image_size // 4
        self.side = side
        self.image_encoder = nn.Sequential(
            nn.Conv2d(3, 64, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(64, 128, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        self.fc_mu = nn.Linear(128 * side * side, latent_dim)
        self.fc_logvar = nn.Linear(128 * side * side, latent_dim)
        self.text_proj = nn.Linear(text_dim, latent_dim)
        self.fusion = Fusion(fusion, latent_dim, latent_dim)
        self.decoder_fc = nn.Linear(self.fusion.out_dim, 128 * side * side)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(64, 3, 4, 2, 1),
            nn.Tanh(),
        )

    def config(self) -> dict:
        keys = ("image_size", "text_dim", "latent_dim", "beta", "logvar_bound")
        return {
            "model": self.kind,
            "fusion": self.fusion_kind,
            **{k: getattr(self, k) for k in keys},
        }

    def encode(self, x: torch.Tensor, c: torch.Tensor | None = None):
        h = self.image_encoder(x * 2 - 1)  # images arrive in [0, 1]; the model works in [-1, 1]
        return self.fc_mu(h), soft_bound(self.fc_logvar(h), self.logvar_bound)

    def decode(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (the tanh output mapped back)."""
        return (self._decode_tanh(z, c) + 1) / 2

    def _decode_tanh(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = self.decoder_fc(self.fusion(z, self.text_proj(c)))
        return self.decoder(h.view(-1, 128, self.side, self.side))

    def decode_logits(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The input of the decoder's final tanh: where guidance acts (models/guidance.py)."""
        h = self.decoder_fc(self.fusion(z, self.text_proj(c)))
        return self.decoder[:-1](h.view(-1, 128, self.side, self.side))

    def images_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(logits) + 1) / 2

    def forward(self, x: torch.Tensor, c: torch.Tensor):
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self._decode_tanh(z, c), mu, logvar

    def batch_losses(self, x: torch.Tensor, c: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 3, S, S) in [0, 1]; c: (B, text_dim). Sums over the batch."""
        out, mu, logvar = self(x, c)
        recon = F.mse_loss(out.float(), x.float() * 2 - 1, reduction="sum")  # §2.3: MSE
        kl = -0.5 * torch.sum(1 + logvar.float() - mu.float().pow(2) - logvar.float().exp())
        return {"loss": recon + self.beta * kl, "recon": recon, "kl": kl}
