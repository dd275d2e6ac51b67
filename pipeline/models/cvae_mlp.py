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
from torch import nn

from pipeline.models.bernoulli import BernoulliCVAE
from pipeline.models.fusion import Fusion, FusionKind


class CVAEMLP(BernoulliCVAE):
    kind = "cvae_mlp"  # config.json's "model"; pipeline/models/registry.py

    def __init__(
        self,
        input_dim: int = 784,
        cond_dim: int = 10,
        hidden_dim: int = 400,
        latent_dim: int = 20,
        fusion: FusionKind = "concat",
    ):
        super().__init__()
        self.input_dim, self.cond_dim = input_dim, cond_dim
        self.hidden_dim, self.latent_dim = hidden_dim, latent_dim
        self.fc1 = nn.Linear(input_dim + cond_dim, hidden_dim)
        self.fc2_mean = nn.Linear(hidden_dim, latent_dim)
        self.fc2_logvar = nn.Linear(hidden_dim, latent_dim)
        self.fusion = fusion
        self.fuse = Fusion(fusion, latent_dim, cond_dim)  # concat: no parameters of its own
        self.fc3 = nn.Linear(self.fuse.out_dim, hidden_dim)
        self.fc4 = nn.Linear(hidden_dim, input_dim)

    def config(self) -> dict:
        return {
            "model": self.kind,
            "input_dim": self.input_dim,
            "cond_dim": self.cond_dim,
            "hidden_dim": self.hidden_dim,
            "latent_dim": self.latent_dim,
            "fusion": self.fusion,
        }

    def encode(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc1(torch.cat([x, c], dim=1)))
        return self.fc2_mean(h), self.fc2_logvar(h)

    def decode_logits(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid outputs; the loss works on these for numerical stability."""
        return self.fc4(F.relu(self.fc3(self.fuse(z, c))))
