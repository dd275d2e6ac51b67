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
from pydantic import Field, field_validator
from torch import nn

from pipeline.models.base import Configured, ModelConfig
from pipeline.models.fusion import Fusion, FusionKind
from pipeline.models.stability import soft_bound


class CVAEGatedConfig(ModelConfig):
    image_size: int = Field(ge=4, le=2048, description="side of the square RGB images")
    text_dim: int = Field(ge=1, le=65_536, description="caption feature size")
    latent_dim: int = Field(ge=1, le=4096, description="size of z")
    fusion: FusionKind = Field(description="how z_img and z_text are joined")
    beta: float = Field(ge=0.0, le=1000.0, description="weight of the KL term")
    logvar_bound: float | None = Field(gt=0.0, le=100.0, description="soft log-variance bound")

    @field_validator("image_size")
    @classmethod
    def _divisible(cls, value: int) -> int:
        if value % 4:
            raise ValueError(f"image_size {value} must be divisible by 4")
        return value


class CVAEGated(Configured, nn.Module):
    kind = "cvae_gated"  # config.json's "model"; pipeline/models/registry.py
    Config = CVAEGatedConfig

    def __init__(self, config: CVAEGatedConfig):
        super().__init__()
        self.config = config
        image_size, text_dim, latent_dim = config.image_size, config.text_dim, config.latent_dim
        fusion, self.beta, self.logvar_bound = config.fusion, config.beta, config.logvar_bound
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
