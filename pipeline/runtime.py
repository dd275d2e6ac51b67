"""Device choice and determinism, shared by every stage that runs torch."""

from __future__ import annotations

import logging

import torch

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else CPU; an explicit CUDA request without one fails."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PipelineError(f"device: {name!r} requested but CUDA is unavailable; use auto or cpu")
    return device


def make_deterministic(seed: int, device: torch.device) -> torch.Generator:
    """Seed torch and return a CPU generator for data order.

    On CPU the same seed gives bit-identical weights. On CUDA some kernels have no
    deterministic version, so there we only warn.
    """
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
