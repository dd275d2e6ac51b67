"""The paper's Fashion-MNIST figures (§3.1): Fig. 4 reconstructions, Fig. 5 samples per class."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.data.fmnist import LABELS, label_index
from pipeline.evaluate import sample_images
from pipeline.figures import image_grid, save_png

FIG5_LABELS = ["sneaker", "boot", "top", "handbag"]  # the paper's §3.1.2 rows


@dataclass(frozen=True)
class Sampling:
    """How the figures' samples are decoded: z's spread scaled by ``temperature``, guidance
    ``guidance`` (w; 0: the plain decoder), z from ``density`` (sampler expost; None: the
    prior), as :func:`pipeline.evaluate.sample_images`."""

    temperature: float = 1.0
    guidance: float = 0.0
    density: object = None


def tiles(x: torch.Tensor):
    return x.reshape(-1, 28, 28).cpu().numpy()


def class_rows(model, classes: list[int], n: int, generator, sampling: Sampling):
    """One row of ``n`` samples per class, labelled with the class name."""
    rows, device = [], next(model.parameters()).device
    t, w = sampling.temperature, sampling.guidance
    for c in classes:
        condition = F.one_hot(torch.full((n,), c), 10).float().to(device)
        rows.append(tiles(sample_images(model, condition, generator, t, w, sampling.density)))
    return image_grid(rows, [LABELS[c] for c in classes])


@torch.no_grad()
def label_figures(model, x, c, n: int, generator, sampling: Sampling, out: Path):
    """Fig. 4 (originals above reconstructions from the posterior mean) and Fig. 5 (samples
    of the paper's labels, then of every class) under ``out``."""
    mu, _ = model.encode(x[:n], c[:n])
    recon = model.decode(mu, c[:n])
    save_png(
        image_grid([tiles(x[:n]), tiles(recon)], ["original", "reconstructed"]),
        out / "fig4_reconstructions.png",
    )
    paper = [label_index(w) for w in FIG5_LABELS]
    for classes, name in ((paper, "fig5_generated.png"), (range(10), "fig5_all_classes.png")):
        save_png(class_rows(model, list(classes), n, generator, sampling), out / name)
