"""NaN is never a result: checks that stop a stage before a non-finite number is written."""

from __future__ import annotations

import math

import torch

from pipeline.errors import PipelineError


def require_finite_tensor(value: torch.Tensor, what: str) -> torch.Tensor:
    """``value`` unchanged, or a PipelineError saying how many entries of ``what`` are bad."""
    bad = ~torch.isfinite(value)
    if bool(bad.any()):
        raise PipelineError(
            f"{what}: {int(bad.sum())} of {value.numel()} values are not finite "
            "(the model diverged or the input is broken); nothing written"
        )
    return value


def require_finite(obj: object, where: str, allow_inf: tuple[str, ...] = ()) -> object:
    """``obj`` (nested dicts and lists of numbers) unchanged when every float is finite.

    ``allow_inf``: keys whose value may be +inf (PSNR of identical images). NaN is refused
    everywhere. The error names the key path, e.g. ``eval.json: reconstruction.mse is nan``.
    """

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")
        elif isinstance(node, float) and not math.isfinite(node):
            if node == math.inf and path.rsplit(".", 1)[-1] in allow_inf:
                return
            raise PipelineError(f"{where}: {path} is {node}; a non-finite result is never saved")

    walk(obj, "")
    return obj
