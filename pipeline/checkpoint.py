"""Model files and resumable training state, as safetensors plus JSON. No pickle anywhere.

<model_dir>/model.safetensors   weights
<model_dir>/config.json         what builds the module again, what it is and what it can do:
                                ``name`` (its params entry), ``class`` (the class-table key,
                                pipeline/models/registry.py), ``model`` (the class's kind),
                                the fields of its Config, ``data``, ``image_shape``,
                                ``conditioning`` (label or the encoder), ``labels``,
                                ``cond_null_p`` (0: it cannot be guided), and for text models
                                ``encoder_weights`` and ``encoder_sha256``
<state_file>                    weights + optimizer + RNG + epoch + history, one file,
                                so that replacing it is atomic; its metadata records the
                                sha256 of its tensors and of each kept epoch's file
<keep_dir>/epoch-NNNN.safetensors   weights of a kept epoch (train.<model>.keep_epochs)
<keep_dir>/kept.json            the sha256 of each kept epoch's file, as training wrote it

Nothing read back is trusted: a resume state whose tensors fail their recorded sha256 or hold
non-finite values is refused, and a kept epoch whose file is missing or changed is never
drawn (evaluation stops with one line) nor resumed from (training starts afresh).

A saved model is checked before it is used: config.json is validated by the model's own
config class (types, ranges), the module is built on the meta device (no memory) and its
tensor names and shapes must be exactly those of model.safetensors' header, and every weight
must be finite. Each failure is one line naming the file and the key.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Annotated, Literal, NamedTuple, get_args

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from safetensors import SafetensorError, safe_open
from safetensors.torch import load, save_file
from torch import nn

from pipeline.atomic import atomic_path, write_json
from pipeline.config import EncoderName
from pipeline.errors import PipelineError
from pipeline.hashing import sha256_file
from pipeline.jsonfile import parse_json
from pipeline.lock import lock_holder
from pipeline.models.registry import CLASSES, model_class

MAX_CONFIG_BYTES = 1_000_000  # a config.json is a few hundred bytes


class SavedMeta(BaseModel):
    """What config.json records besides the class's own Config: what the model is and can do,
    so that every reader (evaluate, cas, generate, report, the API, an exported folder) asks
    the model and never today's params.yaml."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=64, description="its entry in params.yaml models:")
    class_name: str = Field(alias="class", description="its class-table key (models/registry.py)")
    model: str = Field(description="the class's kind")
    data: Literal["fmnist", "coco"] = Field(description="what it was trained on")
    image_shape: list[Annotated[int, Field(ge=1, le=65_536)]] = Field(
        min_length=3, max_length=3, description="[C, H, W] of the images it draws"
    )
    conditioning: Literal[("label", *get_args(EncoderName))] | None = Field(
        description="label: one-hot classes; an encoder: its caption embeddings; null: the judge"
    )
    labels: list[str] | None = Field(None, max_length=10_000, description="class names")
    cond_null_p: float = Field(
        ge=0.0, lt=1.0, description="share of training rows on the null condition; 0: unguidable"
    )
    encoder_weights: str | None = Field(None, description="id of the encoder's weights")
    encoder_sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="sha256 of the encoder's weights file"
    )
    test_accuracy: float | None = Field(None, ge=0.0, le=1.0, description="the judge's")
    density_components: int | None = Field(
        None, ge=1, le=256, description="components per class of its ex-post latent density"
    )
    density_sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="sha256 of density.safetensors beside it"
    )

    @model_validator(mode="after")
    def _density_with_its_hash(self):
        if (self.density_components is None) != (self.density_sha256 is None):
            raise ValueError("density_components and density_sha256 come together, or neither")
        return self

    @field_validator("image_shape", mode="before")
    @classmethod
    def _shape_as_list(cls, value):
        return list(value) if isinstance(value, tuple) else value  # (C, H, W) from the code

    @property
    def is_text(self) -> bool:
        """Conditioned on caption embeddings (``conditioning`` names the encoder)."""
        return self.conditioning not in ("label", None)

    @property
    def has_density(self) -> bool:
        """An ex-post latent density was fitted and saved beside the weights."""
        return self.density_sha256 is not None

    @property
    def can_guide(self) -> bool:
        """Trained with the null condition, so guidance w > 0 has a term to push away from."""
        return self.cond_null_p > 0


class SavedConfig(NamedTuple):
    """config.json validated: the dict, the class, its Config, and :class:`SavedMeta`."""

    config: dict
    cls: type
    model_config: BaseModel
    meta: SavedMeta


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


def save_model(model_dir: Path, model: nn.Module, meta: dict) -> None:
    """config.json is the class's kind, ``model.config`` and ``meta`` (validated as
    :class:`SavedMeta`, so a loader can read back whatever is written). The old config goes
    first, the weights next, the new config last: a save that fails part-way leaves no config,
    so no loader pairs new weights with an old config or old weights with a new one."""
    meta = SavedMeta.model_validate({**meta, "model": model.kind})
    if type(model) is not model_class(meta.class_name):
        raise TypeError(f"{type(model).__name__} is not the class {meta.class_name!r}")
    (model_dir / "config.json").unlink(missing_ok=True)  # a failed save leaves no config
    save_weights(model_dir / "model.safetensors", model)  # naming weights it did not write
    saved = meta.model_dump(by_alias=True, exclude_unset=True)
    write_json(model_dir / "config.json", {**saved, **model.config.model_dump()})


def _invalid(path: Path, error: dict) -> PipelineError:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return PipelineError(f"{path}: key {key}: unknown key; train the model again")
    got = error.get("input")
    shown = repr(got) if len(repr(got)) <= 60 else repr(got)[:57] + "..."
    got_text = "" if error["type"] == "missing" else f" (got {shown})"
    return PipelineError(f"{path}: key {key}: {error['msg']}{got_text}; train the model again")


def read_config(config_path: Path) -> SavedConfig:
    """config.json validated, needing no params.yaml: an exported folder reads the same."""
    if not config_path.is_file():
        raise PipelineError(f"{config_path}: missing; train the model first (dvc repro)")
    if config_path.stat().st_size > MAX_CONFIG_BYTES:
        raise PipelineError(f"{config_path}: larger than {MAX_CONFIG_BYTES} bytes; not a config")
    config = parse_json(config_path.read_bytes(), str(config_path), "config", "train it again")
    if not isinstance(config, dict):
        raise PipelineError(f"{config_path}: expected a JSON object; train the model again")
    key = config.get("class")
    if not isinstance(key, str) or key not in CLASSES:
        raise PipelineError(
            f"{config_path}: key class: {key!r} is no model class; expected one of "
            f"{sorted(CLASSES)}; train the model again"
        )
    cls = model_class(key)
    if config.get("model") != cls.kind:
        raise PipelineError(
            f"{config_path}: key model: {config.get('model')!r}, but class {key} is a "
            f"{cls.kind!r}; train the model again"
        )
    fields = cls.Config.model_fields
    try:
        model_config = cls.Config.model_validate({k: config[k] for k in fields if k in config})
        meta = SavedMeta.model_validate({k: v for k, v in config.items() if k not in fields})
    except ValidationError as exc:
        raise _invalid(config_path, exc.errors()[0]) from None
    for key, value in (
        ("encoder_weights", meta.encoder_weights),
        ("encoder_sha256", meta.encoder_sha256),
    ):
        if meta.is_text and value is None:
            raise PipelineError(
                f"{config_path}: key {key}: missing; a text-conditioned model records its "
                "caption encoder; train the model again"
            )
    return SavedConfig(config, cls, model_config, meta)


MAX_WEIGHTS_BYTES = 20 * 2**30  # the largest weights file read (whole, into memory)
_AGAIN = "train the model again (dvc repro)"


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _snapshot(path: Path, follow: bool = True) -> bytes:
    """Every byte of ``path``, read once through one handle: a file that a retrain replaces
    (os.replace) or rewrites while it is read is one line, "changed while reading ...;
    retry", never the header of one file with the tensors of another. ``follow`` False: a
    symlink is refused (O_NOFOLLOW: also one swapped in after any check)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow:
            raise PipelineError(
                f"{path}: is a symlink; a model folder holds its own files (with DVC's "
                "cache.type symlink: dvc config cache.type reflink,copy; dvc checkout --relink)"
            ) from None
        raise PipelineError(f"{path}: not readable ({exc.strerror}); {_AGAIN}") from None
    with os.fdopen(fd, "rb") as handle:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):  # a folder, a FIFO, a device
            raise PipelineError(f"{path}: not a regular file; {_AGAIN}")
        if before.st_size > MAX_WEIGHTS_BYTES:
            raise PipelineError(
                f"{path}: {before.st_size:,} bytes, over the {MAX_WEIGHTS_BYTES:,} a weights "
                f"file may hold; {_AGAIN}"
            )
        data = handle.read(before.st_size + 1)
    try:
        after = _identity(os.stat(path, follow_symlinks=follow))
    except OSError:  # gone meanwhile
        after = None
    if len(data) != before.st_size or after != _identity(before):
        raise PipelineError(f"{path}: changed while reading (a retrain is replacing it); retry")
    return data


def _parse(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file's bytes, each owning its memory (no view into
    ``data``); a file that is no safetensors is one line."""
    try:
        loaded = load(data)
    except (SafetensorError, KeyError) as exc:  # KeyError: a dtype safetensors.torch lacks
        why = f"unsupported dtype {exc}" if isinstance(exc, KeyError) else str(exc)
        raise PipelineError(f"{path}: not a readable safetensors file ({why}); {_AGAIN}") from None
    return {key: loaded.pop(key).clone() for key in list(loaded)}


def load_model(
    model_dir: Path, device: torch.device | str = "cpu", expect: type | None = None
) -> tuple[nn.Module, dict]:
    """The checked model, in eval mode, and its config.json; ``expect``: the class it must be."""
    config_path, weights_path = model_dir / "config.json", model_dir / "model.safetensors"
    missing = [path for path in (config_path, weights_path) if not os.path.lexists(path)]
    holder = lock_holder(model_dir) if missing else None
    if holder is not None:  # mid-retrain: DVC removed the outputs before running train
        raise PipelineError(f"{missing[0]}: being written by {holder}; retry when it finishes")
    config, cls, model_config, _ = read_config(config_path)
    if expect is not None and cls is not expect:
        raise PipelineError(f"{config_path}: a {cls.kind!r}, not a {expect.kind!r} model")
    if not os.path.lexists(weights_path):
        raise PipelineError(f"{weights_path}: missing; train the model first (dvc repro)")
    with torch.device("meta"):  # shapes only: a config of absurd sizes allocates nothing
        expected = {k: tuple(v.shape) for k, v in cls(model_config).state_dict().items()}
    tensors = _parse(_snapshot(weights_path, follow=False), weights_path)
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    for key in sorted(expected.keys() - found.keys()):
        raise PipelineError(f"{weights_path}: tensor {key} missing; train the model again")
    for key in sorted(found.keys() - expected.keys()):
        raise PipelineError(
            f"{weights_path}: tensor {key} is not a weight of a {cls.kind} built from "
            f"{config_path.name}; train the model again"
        )
    for key, shape in expected.items():
        if found[key] != shape:
            raise PipelineError(
                f"{weights_path}: tensor {key} has shape {list(found[key])}, but "
                f"{config_path.name} builds {list(shape)}; train the model again"
            )
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise PipelineError(
                f"{weights_path}: tensor {key} holds non-finite values (NaN or Inf); "
                "train the model again"
            )
    model = cls(model_config)
    model.load_state_dict(tensors)
    return model.to(device).eval(), config


def require_encoder_weights(config: dict, model_dir: Path, source) -> None:
    """A text model runs only with the encoder weights it was trained on. ``source`` says which
    weights params.yaml's ``embed.<encoder>.weights`` gives now, by its ``weights_id`` and
    ``weights_sha256``: the encoder loaded from it (its ``info``), or the embedding shards the
    embed stage made with it (pipeline/data/embeddings.py's ``encoder_identity``)."""
    weights, sha256 = source.weights_id, source.weights_sha256
    if config.get("encoder_sha256") != sha256:
        key = f"embed.{config['conditioning']}.weights"
        raise PipelineError(
            f"{model_dir / 'config.json'}: key encoder_sha256: the model needs the "
            f"{config['conditioning']} weights {config.get('encoder_weights')!r} (sha256 "
            f"{config.get('encoder_sha256')}), but params.yaml's {key} gives {weights!r} "
            f"(sha256 {sha256}); set {key} to the weights the model needs, or train it again"
        )


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of the file at ``path``, read once (:func:`_snapshot`)."""
    return _parse(_snapshot(path), path)


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
