"""COCO model 1 (paper §2.2): a conv CVAE conditioned on CLIP ViT-B/32 caption embeddings.

Shapes at S = 224 (any S divisible by 32 works; tests use 32), W = 64 (``width``):

    image encoder  x (B, 3, S, S) -> 4 x [conv k4 s2 p1, BatchNorm, LeakyReLU(0.1)]
                   channels W, 2W, 4W, 8W = 64..512   -> (B, 512, S/16, S/16) = 14x14x512
                   flatten -> FC -> (B, 512) -> LayerNorm (feature_norm; not in the paper)
    main encoder   [image 512, caption c 512] -> FC 512 -> LeakyReLU -> FC 256 -> LeakyReLU
                   -> FC mu, FC log sigma^2           (B, 128); log sigma^2 softly
                   bounded to [-logvar_bound, logvar_bound] (not in the paper)
    decoder        fusion(z 128, c 512): concat = 640 (the paper; see fusion.py for others)
                   -> FC -> (B, 512, S/32, S/32) = 7x7x512
                   -> 5 x [deconv k4 s2 p1, BatchNorm, LeakyReLU(0.1)] (none after the last)
                   channels 256, 128, 64, 32, 3       -> (B, 3, S, S) logits; sigmoid = image
    loss           BCE summed over pixels + KL (the paper's "binary cross-entropy and KL")

The paper does not give the kernel sizes, the number of FC layers in the main encoder, or the
decoder's channel widths: the choices above are ours.

Changed against the paper, for stability at its own optimiser settings (Adam, lr 5e-3): the
LayerNorm after the 100,352-input image FC and the bounded log-variance, plus the training
loop's warmup. Without them one Adam step moves the image features by hundreds and the
log-variance to 62, and the KL overflows (stability.py explains why). ``feature_norm=False``
and ``logvar_bound=None`` give the paper's architecture exactly.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from pydantic import Field, field_validator
from torch import nn

from pipeline.models.base import Configured, ModelConfig
from pipeline.models.bernoulli import BernoulliCVAE
from pipeline.models.fusion import Fusion, FusionKind
from pipeline.models.stability import soft_bound


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1))


def _up(cin: int, cout: int, last: bool = False) -> nn.Module:
    deconv = nn.ConvTranspose2d(cin, cout, 4, 2, 1)
    return deconv if last else nn.Sequential(deconv, nn.BatchNorm2d(cout), nn.LeakyReLU(0.1))


class CVAEClipConfig(ModelConfig):
    image_size: int = Field(ge=32, le=2048, description="side of the square RGB images")
    text_dim: int = Field(ge=1, le=65_536, description="caption embedding size")
    latent_dim: int = Field(ge=1, le=4096, description="size of z")
    width: int = Field(ge=2, le=1024, description="channels of the first conv")
    fusion: FusionKind = Field(description="how the decoder joins z and the caption")
    feature_norm: bool = Field(description="LayerNorm after the image FC")
    logvar_bound: float | None = Field(gt=0.0, le=100.0, description="soft log-variance bound")

    @field_validator("image_size")
    @classmethod
    def _divisible(cls, value: int) -> int:
        if value % 32:
            raise ValueError(f"image_size {value} must be divisible by 32")
        return value


class CVAEClip(Configured, BernoulliCVAE):
    kind = "cvae_clip"  # config.json's "model"; pipeline/models/registry.py
    Config = CVAEClipConfig

    def __init__(self, config: CVAEClipConfig):
        super().__init__()
        self.config = config
        image_size, text_dim, latent_dim = config.image_size, config.text_dim, config.latent_dim
        width, fusion, feature_norm = config.width, config.fusion, config.feature_norm
        self.width, self.logvar_bound = width, config.logvar_bound
        chans = [3, width, 2 * width, 4 * width, 8 * width]
        self.image_encoder = nn.Sequential(*(_down(a, b) for a, b in pairwise(chans)))
        feat = 8 * width * (image_size // 16) ** 2
        self.image_fc = nn.Linear(feat, 512)
        self.image_norm = nn.LayerNorm(512) if feature_norm else nn.Identity()
        self.encoder = nn.Sequential(
            nn.Linear(512 + text_dim, 512),
            nn.LeakyReLU(0.1),
            nn.Linear(512, 256),
            nn.LeakyReLU(0.1),
        )
        self.fc_mu, self.fc_logvar = nn.Linear(256, latent_dim), nn.Linear(256, latent_dim)
        self.fusion = Fusion(fusion, latent_dim, text_dim)
        self.seed_side = image_size // 32
        self.decoder_fc = nn.Linear(self.fusion.out_dim, 8 * width * self.seed_side**2)
        up = [8 * width, 4 * width, 2 * width, width, width // 2, 3]
        self.decoder = nn.Sequential(
            *(_up(a, b, last=i == len(up) - 2) for i, (a, b) in enumerate(pairwise(up)))
        )

    def encode(self, x: torch.Tensor, c: torch.Tensor):
        h = self.image_norm(self.image_fc(self.image_encoder(x).flatten(1)))
        h = self.encoder(torch.cat([h, c], dim=1))
        return self.fc_mu(h), soft_bound(self.fc_logvar(h), self.logvar_bound)

    def decode_logits(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = self.decoder_fc(self.fusion(z, c))
        return self.decoder(h.view(-1, 8 * self.width, self.seed_side, self.seed_side))
