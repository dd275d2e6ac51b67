"""Reconstruction metrics on inputs whose answer is known."""

import math

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.finite import require_finite
from pipeline.image_metrics import (
    psnr_per_image,
    reconstruction_metrics,
    ssim_per_image,
)


def test_psnr_of_identical_images_is_infinite():
    x = torch.rand(3, 3, 16, 16)
    assert torch.isinf(psnr_per_image(x, x)).all()
    assert reconstruction_metrics(x, x)["psnr_db"] == math.inf


def test_psnr_at_a_known_noise_level_matches_the_formula():
    x = torch.full((2, 3, 32, 32), 0.5)
    noisy = x + 0.1 * torch.where(torch.rand_like(x) > 0.5, 1.0, -1.0)  # MSE exactly 0.01
    expected = 10 * math.log10(1 / 0.01)  # 20 dB
    assert torch.allclose(psnr_per_image(x, noisy), torch.tensor(expected), atol=1e-4)


def test_ssim_is_one_for_identical_images_and_falls_with_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g)
    assert torch.allclose(ssim_per_image(x, x), torch.ones(2), atol=1e-5)
    light = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    heavy = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert (ssim_per_image(x, heavy) < ssim_per_image(x, light)).all()
    assert (ssim_per_image(x, light) < 1).all()


def test_a_nan_reconstruction_is_refused_never_a_perfect_psnr():
    originals = torch.rand(3, 3, 16, 16)
    broken = originals.clone()
    broken[1, 0, 4, 4] = float("nan")
    with pytest.raises(PipelineError, match="reconstructions: 1 of 2304 values are not finite"):
        reconstruction_metrics(originals, broken)
    with pytest.raises(PipelineError, match="original images"):
        reconstruction_metrics(broken, originals)


def test_identical_images_give_infinite_psnr_and_only_psnr_may_be_infinite():
    x = torch.rand(2, 3, 16, 16)
    metrics = reconstruction_metrics(x, x)
    assert metrics["psnr_db"] == math.inf and metrics["mse"] == 0.0
    assert require_finite({"r": metrics}, "eval.json", allow_inf=("psnr_db",))
    with pytest.raises(PipelineError, match=r"eval.json: r.psnr_db is inf"):
        require_finite({"r": metrics}, "eval.json")
    with pytest.raises(PipelineError, match=r"eval.json: a.b\[1\] is nan"):
        require_finite({"a": {"b": [1.0, math.nan]}}, "eval.json", allow_inf=("b",))
