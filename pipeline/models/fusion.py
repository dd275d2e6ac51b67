"""Fusion of an image latent z and a text vector t (paper §1.0.2, after Pulapakura 2023).

    concat:  [z, t]                                   out_dim = latent + text
    add:     z + P t                                  out_dim = latent
    gated:   g = sigmoid(W_g [z, P t] + b_g),         out_dim = latent
             g * z + (1 - g) * P t

P is a linear projection of t to the latent size, present only when the sizes differ.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

FusionKind = Literal["concat", "add", "gated"]
FUSION_KINDS = ("concat", "add", "gated")


class Fusion(nn.Module):
    def __init__(self, kind: FusionKind, latent_dim: int, text_dim: int):
        super().__init__()
        if kind not in FUSION_KINDS:
            raise ValueError(f"fusion {kind!r}: expected one of {FUSION_KINDS}")
        self.kind = kind
        self.project = (
            nn.Linear(text_dim, latent_dim)
            if kind != "concat" and text_dim != latent_dim
            else nn.Identity()
        )
        self.gate = nn.Linear(2 * latent_dim, latent_dim) if kind == "gated" else None
        self.out_dim = latent_dim + text_dim if kind == "concat" else latent_dim

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.kind == "concat":
            return torch.cat([z, t], dim=-1)
        t = self.project(t)
        if self.kind == "add":
            return z + t
        g = torch.sigmoid(self.gate(torch.cat([z, t], dim=-1)))
        return g * z + (1 - g) * t
