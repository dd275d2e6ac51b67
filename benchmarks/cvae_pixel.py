"""The conv CVAE with a small autoregressive head over its output (ours; issue 20, part 3).

A Bernoulli mean on grey values, independent per pixel given z, averages thin structures
(sandal straps, shirt plackets) away: where z leaves a strap's position uncertain, every
pixel is drawn half-grey. PixelVAE (Gulrajani et al. 2017) puts a few masked PixelCNN layers
over the decoder's output instead, so each pixel sees the ones already drawn and a strap
continues where it began. Here the autoregression runs over *rows*, so sampling costs 28
steps, not 784 (the pixels of a row are independent given the rows above, z and c):

    decoder    the conv CVAE's (pipeline/models/cvae_prior.py) up to its last deconv, which
               gives F feature maps f (B, F, 28, 28) instead of one logit map
    head       s = x shifted down one row (row r sees x rows < r only)
               g1 = gate(causal conv 3x3 (s) + 1x1 (f))                      (B, A, 28, 28)
               g2 = g1 + gate(causal conv 3x3 (g1) + 1x1 (f))
               logits = 1x1 (g2) + 1x1 (f)                                   (B, 1, 28, 28)
    gate(v)    tanh(v_1) * sigmoid(v_2), the gated PixelCNN unit (van den Oord et al. 2016)
    causal     zero-padded by two rows above, none below: row r of the output sees rows
               r-2 .. r of its input, so row r of the logits sees x rows r-5 .. r-1

p(x|z,c) = prod_r prod_j Bernoulli(x_rj; sigmoid(logit_rj)) on grey values, as the paper's
decoder. Training is teacher-forced (one pass). Sampling draws z from the prior, then fills
rows 0..27 in turn, each from a 6-row crop (exactly the rows it sees), feeding each row back
as its Bernoulli mean (grey values, as in training).

``decode_logits`` returns the head's input (the F feature maps, flattened) and
``log_likelihood(features, x)`` runs the head on x: so the project's loss, -ELBO and
importance-weighted NLL (pipeline/evaluate.py) apply unchanged; ``images_from_logits``
runs the row-by-row sampling on those features, so guidance (pipeline/models/guidance.py)
extrapolates the head's input features, not its logits.

Built as the other models are, from its typed config: ``CVAEPixel.of(cond_dim=10, ...)``.
It is an experiment, so it lives in benchmarks/, not in pipeline/ (issue 24): it is not a
model of the registry (no ``fmnist_pixel`` params or stages), because its better numbers in
the coverage probe have not yet earned its cost in the main job (about 3x the conv CVAE's
training step, 10-20x its sampling; docs/coverage.md). The probe
(benchmarks/coverage_probe.py) trains and scores it, importing it from this folder, and
tests/test_cvae_pixel.py loads it from here. Joining the main job means moving it back under
pipeline/models/ with a registry entry (docs/coverage.md, "Use").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pipeline.models.base import ModelConfig
from pipeline.models.cvae_prior import CVAEPrior, CVAEPriorConfig, PriorKind

ROWS_SEEN = 5  # row r of the logits depends on x rows r-5 .. r-1


def _gate(v: torch.Tensor) -> torch.Tensor:
    t, g = v.chunk(2, 1)
    return torch.tanh(t) * torch.sigmoid(g)


def _causal(x: torch.Tensor) -> torch.Tensor:
    """Pad for a 3x3 conv that sees its own row and the two above."""
    return F.pad(x, (1, 1, 2, 0))


class CVAEPixelConfig(ModelConfig):
    cond_dim: int = Field(ge=1, le=65_536, description="one-hot labels or embedding size")
    latent_dim: int = Field(ge=1, le=4096, description="size of z")
    width: int = Field(ge=1, le=1024, description="channels of the first conv")
    cond_hidden: int = Field(ge=1, le=65_536, description="units of the condition network")
    prior: PriorKind = Field(description="learned: p(z|c) from a network; standard: N(0, I)")
    feature_channels: int = Field(
        ge=1, le=256, description="feature maps the decoder hands the autoregressive head"
    )
    ar_channels: int = Field(ge=1, le=256, description="channels of the head's gated convs")


class CVAEPixel(CVAEPrior):
    """The conv CVAE (concat fusion, no condition noise or dropout, Bernoulli) with the head."""

    kind = "cvae_pixel"  # config.json's "model"; not in pipeline/models/registry.py
    Config = CVAEPixelConfig

    def __init__(self, config: CVAEPixelConfig):
        body = config.model_dump(exclude={"feature_channels", "ar_channels"})
        super().__init__(
            CVAEPriorConfig(
                **body,
                fusion="concat",
                cond_noise=0.0,
                cond_dropout=0.0,
                arch="conv",
                likelihood="bernoulli",
                beta=1.0,
            )
        )
        self.config = config
        self.feature_channels = config.feature_channels
        w, f, a = config.width, config.feature_channels, config.ar_channels
        self.head = nn.Sequential(
            nn.Unflatten(1, (2 * w, 7, 7)),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(w, f, 4, 2, 1),
            nn.Flatten(),
        )
        self.ar_in, self.ar_mid = nn.Conv2d(1, 2 * a, 3), nn.Conv2d(a, 2 * a, 3)
        self.cond_in, self.cond_mid = nn.Conv2d(f, 2 * a, 1), nn.Conv2d(f, 2 * a, 1)
        self.out, self.skip = nn.Conv2d(a, 1, 1), nn.Conv2d(f, 1, 1)

    def decode_logits(
        self, z: torch.Tensor, c: torch.Tensor, h: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The head's input: F feature maps per image, flattened (..., F * 784)."""
        lead = z.shape[:-1]  # (B,) or (k, B) in the importance-weighted bound
        z, c = z.reshape(-1, z.shape[-1]), c.reshape(-1, c.shape[-1])
        h = self.condition(c) if h is None else h.reshape(-1, h.shape[-1])
        return self.head(self.dec_fc(self.fuse(z, h))).reshape(*lead, -1)

    def ar_logits(self, f: torch.Tensor, x_img: torch.Tensor) -> torch.Tensor:
        """Logits (B, 1, R, 28) of R rows given features f (B, F, R, 28) and the image rows
        x_img (B, 1, R, 28): row r's logits see x_img rows < r only."""
        s = F.pad(x_img, (0, 0, 1, 0))[:, :, :-1]
        g = _gate(self.ar_in(_causal(s)) + self.cond_in(f))
        g = g + _gate(self.ar_mid(_causal(g)) + self.cond_mid(f))
        return self.out(g) + self.skip(f)

    def log_likelihood(self, features: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z,c) per image: the head over x (teacher-forced), Bernoulli on grey values.
        ``features``: ``decode_logits``'s output (..., F * 784); x (..., 784)."""
        lead = x.shape[:-1]
        f = features.reshape(-1, self.feature_channels, 28, 28)
        logits = self.ar_logits(f, x.reshape(-1, 1, 28, 28)).reshape(*lead, 784)
        return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)

    @torch.no_grad()
    def images_from_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Images (B, 784) in [0, 1] from the head's input (B, F * 784): rows 0..27 in turn,
        each the Bernoulli mean given the rows above, computed on the 6-row crop it sees.
        ``decode(z, c)`` (pipeline/models/bernoulli.py) is this of ``decode_logits(z, c)``."""
        f = features.reshape(len(features), self.feature_channels, 28, 28)
        canvas = f.new_zeros(len(f), 1, 28, 28)
        for r in range(28):
            top = max(0, r - ROWS_SEEN)
            logits = self.ar_logits(f[:, :, top : r + 1], canvas[:, :, top : r + 1])
            canvas[:, :, r] = torch.sigmoid(logits[:, :, -1])
        return canvas.flatten(1)
