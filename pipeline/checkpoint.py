"""Model files and resumable training state, as safetensors plus JSON. No pickle anywhere.

<model_dir>/model.safetensors   weights
<model_dir>/config.json         what builds the module again: its class (``model``, found in
                                pipeline/models/registry.py), the constructor arguments
                                that ``init_args`` names, and what it was trained on
<state_file>                    weights + optimizer + RNG + epoch + history, one file,
                                so that replacing it is atomic; its metadata records the
                                sha256 of its tensors and of each kept epoch's file
<keep_dir>/epoch-NNNN.safetensors   weights of a kept epoch (train.<model>.keep_epochs)
<keep_dir>/kept.json            the sha256 of each kept epoch's file, as training wrote it

Nothing read back is trusted: a resume state whose tensors fail their recorded sha256 or hold
non-finite values is refused, and a kept epoch whose file is missing or changed is never
drawn (evaluation stops with one line) nor resumed from (training starts afresh).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.atomic import atomic_path, write_json
from pipeline.errors import PipelineError
from pipeline.hashing import sha256_file
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
    tensors = _tensors(tensors)
    meta = {**meta, "param_groups": optim["param_groups"], "sha256": tensors_sha256(tensors)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta)})


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{value.dtype}\0{tuple(value.shape)}\0".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def verify_state(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Refuse to resume from a state whose tensors fail their recorded sha256 or hold
    non-finite values: one line saying how to start afresh."""
    afresh = f"delete it to train afresh (rm {path}), then rerun the stage"
    recorded = meta.get("sha256")
    if recorded is None:
        raise PipelineError(f"{path}: no recorded sha256 of its tensors (older format); {afresh}")
    if tensors_sha256(tensors) != recorded:
        raise PipelineError(
            f"{path}: its tensors fail their recorded sha256 (changed after training wrote "
            f"them); {afresh}"
        )
    for name, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise PipelineError(f"{path}: {name} holds non-finite values; {afresh}")


KEPT_MANIFEST = "kept.json"


def kept_path(keep_dir: Path, epoch: int) -> Path:
    return keep_dir / f"epoch-{epoch:04d}.safetensors"


def save_kept_epoch(keep_dir: Path, epoch: int, model: nn.Module) -> str:
    """Write a kept epoch's weights; return the sha256 of the file written."""
    path = kept_path(keep_dir, epoch)
    save_weights(path, model)
    return sha256_file(path)


def write_kept(keep_dir: Path, kept: dict[int, str]) -> None:
    """Leave exactly the epochs of ``kept`` (epoch -> sha256) in ``keep_dir``, and their
    manifest: a file of another epoch goes."""
    names = {kept_path(keep_dir, epoch).name for epoch in kept}
    for path in keep_dir.glob("epoch-*.safetensors"):
        if path.name not in names:
            path.unlink()
    manifest = {kept_path(keep_dir, e).name: sha for e, sha in sorted(kept.items())}
    write_json(keep_dir / KEPT_MANIFEST, manifest)


def kept_problem(keep_dir: Path, kept: dict[int, str], wanted: list[int]) -> str | None:
    """Why the kept epochs ``wanted`` are not all on disk as recorded in ``kept``, or None."""
    for epoch in wanted:
        path = kept_path(keep_dir, epoch)
        if epoch not in kept:
            return f"keep_epochs names epoch {epoch}, which the recorded run did not keep"
        if not path.is_file():
            return f"{path}: missing"
        if sha256_file(path) != kept[epoch]:
            return f"{path}: changed since training wrote it (its sha256 differs)"
    return None


def verified_kept_epochs(keep_dir: Path, epochs: list[int], key: str) -> list[Path]:
    """The files of the kept ``epochs`` (param ``key``), each checked against the sha256
    training recorded in kept.json; a missing or changed one is a one-line error."""
    if not epochs:
        return []
    manifest = keep_dir / KEPT_MANIFEST
    again = "train again (dvc repro)"
    try:
        recorded = json.loads(manifest.read_text())
    except FileNotFoundError:
        raise PipelineError(
            f"{manifest}: missing; {again} to keep the epochs {key} names"
        ) from None
    except (ValueError, OSError) as exc:
        raise PipelineError(f"{manifest}: not readable JSON ({exc}); {again}") from None
    if not isinstance(recorded, dict):
        raise PipelineError(f"{manifest}: expected a JSON object; {again}")
    kept = {e: recorded.get(kept_path(keep_dir, e).name) for e in epochs}
    problem = kept_problem(keep_dir, {e: sha for e, sha in kept.items() if sha}, epochs)
    if problem is not None:
        raise PipelineError(f"{key}: {problem}; {again}")
    return [kept_path(keep_dir, e) for e in epochs]


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
