"""A convolutional Fashion-MNIST CVAE with a learned conditional prior (ours, beyond §2.1).

Sohn, Lee & Yan (2015) write the conditional VAE with three networks: a recognition network
q(z|x,c), a generation network p(x|z,c) and a *prior* network p(z|c). The paper's §2.1 model
(``cvae_mlp``) fixes p(z|c) = N(0, I); here it is learned, and samples are drawn from it:

    condition  c (B, C) -> [train: + noise, dropout] -> fc (C -> H) -> ReLU      h (B, H)
    encoder    x (B, 1, 28, 28) -> conv 4x4/2 (W) -> ReLU -> conv 4x4/2 (2W) -> ReLU
               -> flatten (2W*7*7) ++ h -> fc -> ReLU -> fc -> mu, logvar       (B, L) each
    prior      h -> fc (H -> H) -> ReLU -> fc -> mu_p, logvar_p                  (B, L) each
    decoder    fuse(z, h) -> fc -> ReLU -> (2W, 7, 7) -> deconv 4x4/2 (W) -> ReLU
               -> deconv 4x4/2 (1) -> logits (B, 1, 28, 28), flattened to (B, 784)

``prior: standard`` keeps N(0, I) (the paper's choice) with the same networks otherwise.
The loss is the negative ELBO with KL(q(z|x,c) || p(z|c)) in closed form. For text
conditions (caption embeddings), Gaussian noise (``cond_noise``, per coordinate) and dropout
(``cond_dropout``) on the embedding during training smooth the map from embedding to image,
so phrasings the model never saw land near the ones it did (a standard regulariser of
conditioning inputs, as in StackGAN's conditioning augmentation).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.bernoulli import BernoulliCVAE
from pipeline.models.fusion import Fusion, FusionKind

PriorKind = Literal["learned", "standard"]


class CVAEConv(BernoulliCVAE):
    kind = "cvae_conv"  # config.json's "model"; pipeline/models/registry.py

    def __init__(self, cond_dim: int = 10, latent_dim: int = 16, width: int = 32,
                 cond_hidden: int = 128, prior: PriorKind = "learned", fusion: FusionKind = "concat",
                 cond_noise: float = 0.0, cond_dropout: float = 0.0):  # fmt: skip
        super().__init__()
        if prior not in ("learned", "standard"):
            raise ValueError(f"prior {prior!r}: expected 'learned' or 'standard'")
        self.cond_dim, self.latent_dim, self.width = cond_dim, latent_dim, width
        self.cond_hidden, self.prior_kind, self.fusion_kind = cond_hidden, prior, fusion
        self.cond_noise, self.cond_dropout = cond_noise, cond_dropout
        w, flat = width, 2 * width * 7 * 7
        self.cond = nn.Sequential(nn.Dropout(cond_dropout), nn.Linear(cond_dim, cond_hidden),
                                  nn.ReLU())  # fmt: skip
        self.enc_conv = nn.Sequential(
            nn.Conv2d(1, w, 4, 2, 1), nn.ReLU(), nn.Conv2d(w, 2 * w, 4, 2, 1), nn.ReLU(),
            nn.Flatten(),
        )  # fmt: skip
        self.enc_fc = nn.Sequential(nn.Linear(flat + cond_hidden, 256), nn.ReLU())
        self.enc_out = nn.Linear(256, 2 * latent_dim)
        self.prior_net = (
            nn.Sequential(nn.Linear(cond_hidden, cond_hidden), nn.ReLU(),
                          nn.Linear(cond_hidden, 2 * latent_dim))  # fmt: skip
            if prior == "learned"
            else None
        )
        self.fuse = Fusion(fusion, latent_dim, cond_hidden)
        self.dec_fc = nn.Sequential(nn.Linear(self.fuse.out_dim, flat), nn.ReLU())
        self.dec_conv = nn.Sequential(
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(w, 1, 4, 2, 1)
        )

    def config(self) -> dict:
        return {
            "model": self.kind, "cond_dim": self.cond_dim, "latent_dim": self.latent_dim,
            "width": self.width, "cond_hidden": self.cond_hidden, "prior": self.prior_kind,
            "fusion": self.fusion_kind, "cond_noise": self.cond_noise,
            "cond_dropout": self.cond_dropout,
        }  # fmt: skip

    def condition(self, c: torch.Tensor) -> torch.Tensor:
        if self.training and self.cond_noise > 0:
            c = c + self.cond_noise * torch.randn_like(c)
        return self.cond(c)

    def prior(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu_p, logvar_p) of p(z|c)."""
        if self.prior_net is None:
            zeros = c.new_zeros(len(c), self.latent_dim)
            return zeros, zeros
        mu, logvar = self.prior_net(self.condition(c)).chunk(2, dim=-1)
        return mu, logvar

    def encode(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.enc_conv(x.reshape(-1, 1, 28, 28))
        h = self.enc_fc(torch.cat([features, self.condition(c)], dim=1))
        mu, logvar = self.enc_out(h).chunk(2, dim=-1)
        return mu, logvar

    def decode_logits(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]  # (B,) or (k, B) in the importance-weighted bound
        z, c = z.reshape(-1, z.shape[-1]), c.reshape(-1, c.shape[-1])
        h = self.dec_fc(self.fuse(z, self.condition(c)))
        logits = self.dec_conv(h.reshape(-1, 2 * self.width, 7, 7))
        return logits.reshape(*lead, 784)

    def batch_losses(self, x: torch.Tensor, c: torch.Tensor) -> dict[str, torch.Tensor]:
        """BCE + KL(q(z|x,c) || p(z|c)), summed over the batch."""
        h = self.condition(c)  # one noise draw per step for encoder, prior and decoder alike
        features = self.enc_conv(x.reshape(-1, 1, 28, 28))
        mu, logvar = self.enc_out(self.enc_fc(torch.cat([features, h], dim=1))).chunk(2, dim=-1)
        if self.prior_net is None:
            mu_p = logvar_p = torch.zeros_like(mu)
        else:
            mu_p, logvar_p = self.prior_net(h).chunk(2, dim=-1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        out = self.dec_fc(self.fuse(z, h))
        logits = self.dec_conv(out.reshape(-1, 2 * self.width, 7, 7)).reshape(len(x), 784)
        recon = F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="sum")
        kl = gaussian_kl(mu, logvar, mu_p, logvar_p).sum()
        return {"loss": recon + kl, "recon": recon, "kl": kl}


def gaussian_kl(mu, logvar, mu_p, logvar_p) -> torch.Tensor:
    """KL(N(mu, e^logvar) || N(mu_p, e^logvar_p)) per row, summed over the latent dimension."""
    return 0.5 * (
        logvar_p - logvar + (logvar.exp() + (mu - mu_p).pow(2)) / logvar_p.exp() - 1
    ).sum(-1)
