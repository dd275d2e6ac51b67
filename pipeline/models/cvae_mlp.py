"""The Fashion-MNIST conditional VAE of paper §2.1 (after Sohn et al. 2015).

Shapes, with D = 784 pixels, C = condition size (10 one-hot labels), H = hidden, L = latent:

    encoder  [x (B, D), c (B, C)] -> fc1 (D+C -> H) -> ReLU -> fc2_mean, fc2_logvar (H -> L)
    sample   z = mu + sigma * eps,  eps ~ N(0, I)                      (reparameterisation)
    decoder  [z (B, L), c (B, C)] -> fc3 (L+C -> H) -> ReLU -> fc4 (H -> D) -> sigmoid

The paper gives neither H nor L; we default to H = 400 and L = 20 (params.yaml), the sizes of
Kingma & Welling's MNIST experiments.

``fusion`` (pipeline/models/fusion.py) says how the decoder joins z and c: ``concat`` is the
paper's [z, c] above; ``add`` and ``gated`` (§1.0.2) project c to L first, and fc3 then takes
L inputs. The text-conditioned model compares the three (README, "The paper's fusion
comparison").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pipeline.models.base import Configured, ModelConfig
from pipeline.models.bernoulli import BernoulliCVAE
from pipeline.models.fusion import Fusion, FusionKind


class CVAEMLPConfig(ModelConfig):
    input_dim: int = Field(ge=1, le=65_536, description="pixels per image (784)")
    cond_dim: int = Field(ge=1, le=65_536, description="one-hot labels or embedding size")
    hidden_dim: int = Field(ge=1, le=65_536, description="units of the hidden layers")
    latent_dim: int = Field(ge=1, le=4096, description="size of z")
    fusion: FusionKind = Field(description="how the decoder joins z and the condition")


class CVAEMLP(Configured, BernoulliCVAE):
    kind = "cvae_mlp"  # config.json's "model"; pipeline/models/registry.py
    Config = CVAEMLPConfig

    def __init__(self, config: CVAEMLPConfig):
        super().__init__()
        self.config = config
        d, c, h, z = config.input_dim, config.cond_dim, config.hidden_dim, config.latent_dim
        self.fc1 = nn.Linear(d + c, h)
        self.fc2_mean = nn.Linear(h, z)
        self.fc2_logvar = nn.Linear(h, z)
        self.fuse = Fusion(config.fusion, z, c)  # concat: no parameters of its own
        self.fc3 = nn.Linear(self.fuse.out_dim, h)
        self.fc4 = nn.Linear(h, d)

    def encode(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc1(torch.cat([x, c], dim=1)))
        return self.fc2_mean(h), self.fc2_logvar(h)

    def decode_logits(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid outputs; the loss works on these for numerical stability."""
        return self.fc4(F.relu(self.fc3(self.fuse(z, c))))
