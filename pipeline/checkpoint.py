"""Model files and resumable training state, as safetensors plus JSON. No pickle anywhere.

<model_dir>/model.safetensors   weights
<model_dir>/config.json         what builds the module again: its class (``model``, found in
                                pipeline/models/registry.py), the constructor arguments
                                that ``init_args`` names, and what it was trained on
<state_file>                    weights + optimizer + RNG + epoch + history, one file,
                                so that replacing it is atomic
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.atomic import atomic_path, write_json
from pipeline.errors import PipelineError
from pipeline.models.registry import model_class


def _tensors(state: dict) -> dict[str, torch.Tensor]:
    # safetensors needs contiguous tensors that share no memory.
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def require_finite(model: nn.Module, path: Path) -> None:
    """NaN is never saved: refuse weights with a non-finite entry, naming the first one."""
    for name, value in model.state_dict().items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise PipelineError(f"{path}: not written: weight {name} holds non-finite values")


def save_weights(path: Path, model: nn.Module) -> None:
    require_finite(model, path)
    with atomic_path(path) as tmp:
        save_file(_tensors(model.state_dict()), str(tmp))


def save_model(model_dir: Path, model: nn.Module, extra: dict | None = None) -> None:
    """``model.config()`` is its kind (``model``) and its constructor's arguments."""
    config = model.config()
    init_args = sorted(k for k in config if k != "model")
    save_weights(model_dir / "model.safetensors", model)
    write_json(model_dir / "config.json", {**config, **(extra or {}), "init_args": init_args})


def load_model(model_dir: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    config_path, weights_path = model_dir / "config.json", model_dir / "model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise PipelineError(f"{path}: missing; train the model first (dvc repro)")
    try:
        config = json.loads(config_path.read_text())
    except (ValueError, RecursionError) as exc:
        message = f"{config_path}: not valid JSON ({exc}); train the model again"
        raise PipelineError(message) from None
    if not isinstance(config, dict):
        raise PipelineError(f"{config_path}: expected a JSON object; train the model again")
    cls = model_class(config.get("model"), str(config_path))
    if "init_args" not in config:
        raise PipelineError(f"{config_path}: no init_args (an older format); retrain the model")
    model = cls(**{k: config[k] for k in config["init_args"]})
    model.load_state_dict(_read_tensors(weights_path))
    return model.to(device).eval(), config


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:  # truncated or not safetensors
        raise PipelineError(
            f"{path}: not a readable safetensors file ({exc}); train the model again (dvc repro)"
        ) from None


def save_state(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    meta: dict,
) -> None:
    """One file holding everything that an exact resume needs."""
    require_finite(model, path)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    optim = optimizer.state_dict()
    for index, entry in optim["state"].items():
        for name, value in entry.items():
            tensors[f"optim.{index}.{name}"] = torch.as_tensor(value)
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.data"] = generator.get_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {**meta, "param_groups": optim["param_groups"]}
    with atomic_path(path) as tmp:
        save_file(_tensors(tensors), str(tmp), metadata={"meta": json.dumps(meta)})


def load_state(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads(handle.metadata()["meta"])
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
        raise PipelineError(
            f"{path}: not a readable training state ({exc}); delete it to train from scratch"
        ) from None
    return _read_tensors(path), meta


def restore_state(
    tensors: dict[str, torch.Tensor],
    meta: dict,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> None:
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.data"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
