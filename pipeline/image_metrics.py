"""Reconstruction metrics on images in [0, 1]: MSE, PSNR and SSIM, per image then averaged.

SSIM follows Wang et al. (2004): an 11x11 Gaussian window (sigma 1.5), C1 = (0.01 L)^2,
C2 = (0.03 L)^2 with L = 1, computed per channel and averaged.

Non-finite images are refused (PipelineError): a NaN reconstruction must never turn into a
perfect PSNR. PSNR is +inf only for an image reconstructed exactly, and then the mean is +inf.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pipeline.finite import require_finite_tensor


def mse_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.float() - b.float()).pow(2).flatten(1).mean(1)


def psnr_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """10 log10(1 / MSE) in dB; identical images give +inf."""
    mse = mse_per_image(a, b)
    return torch.where(mse > 0, -10 * torch.log10(mse), torch.full_like(mse, math.inf))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim_per_image(a: torch.Tensor, b: torch.Tensor, window: int = 11) -> torch.Tensor:
    """a, b: (N, C, H, W) in [0, 1]; H and W at least ``window``."""
    a, b = a.float(), b.float()
    channels = a.shape[1]
    kernel = _gaussian_window(window).to(a.device).expand(channels, 1, window, window)

    def blur(x):
        return F.conv2d(x, kernel, groups=channels)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return ssim.flatten(1).mean(1)


def reconstruction_per_image(originals: torch.Tensor, reconstructions: torch.Tensor) -> dict:
    """MSE, PSNR and SSIM of each image (CPU tensors), so a stream of batches can be scored."""
    require_finite_tensor(originals, "reconstruction metrics: original images")
    require_finite_tensor(reconstructions, "reconstruction metrics: reconstructions")
    return {
        "mse": mse_per_image(originals, reconstructions).cpu(),
        "psnr_db": psnr_per_image(originals, reconstructions).cpu(),
        "ssim": ssim_per_image(originals, reconstructions).cpu(),
    }


def summarise_reconstruction(parts: list[dict]) -> dict:
    """Means over every image of ``reconstruction_per_image`` results of several batches."""
    values = {k: torch.cat([part[k] for part in parts]) for k in ("mse", "psnr_db", "ssim")}
    return {
        "mse": float(values["mse"].mean()),
        "psnr_db": float(values["psnr_db"].mean()),  # +inf when an image is reconstructed exactly
        "ssim": float(values["ssim"].mean()),
        "images": len(values["mse"]),
    }


def reconstruction_metrics(originals: torch.Tensor, reconstructions: torch.Tensor) -> dict:
    return summarise_reconstruction([reconstruction_per_image(originals, reconstructions)])
