"""The table of model classes, and building a named model from its params entry.

A named model is data: one entry under ``models:`` in params.yaml (class, data, conditioning,
summary, arch, train, evaluate; the schema is pipeline/config.py's ``ModelEntry``). This file
only maps each ``class`` key to its ``"module:Class"``, imported when that class is asked for
(as pipeline/encoders/__init__.py does for encoders): a stage imports the one model it runs, and
scripts/stage_deps.py gives it that model's file as a dep, not the others'.

Adding a named model over an existing class is one params entry. Adding a class is its file
(the ``nn.Module`` with ``batch_losses`` and its typed ``Config``) plus one line here.

A model's ``arch`` is validated by the class's own Config when it is built (:func:`build`), with
the sizes its data gives (``input_dim``, ``cond_dim``, ``image_size``, ``text_dim``): every
Config field is one of the two, and an arch key the Config does not take is an error naming it.
"""

from __future__ import annotations

import importlib

from pydantic import ValidationError
from torch import nn

from pipeline.errors import PipelineError

CLASSES = {
    "cvae_mlp": "pipeline.models.cvae_mlp:CVAEMLP",  # paper §2.1
    "cvae_prior": "pipeline.models.cvae_prior:CVAEPrior",  # ours: learned prior, conv or MLP
    "cvae_clip": "pipeline.models.cvae_clip:CVAEClip",  # paper §2.2
    "cvae_gated": "pipeline.models.cvae_gated:CVAEGated",  # paper §2.3
    "judge": "pipeline.models.judge:JudgeCNN",  # ours: the classifier that scores samples
}

FMNIST_SHAPE = (1, 28, 28)  # §2.1: grey 28x28, flattened to 784 inside the MLP


def class_module(key: str) -> str:
    """``cvae_mlp`` -> ``pipeline.models.cvae_mlp``, importing nothing."""
    return _target(key).partition(":")[0]


def _target(key: str) -> str:
    if not isinstance(key, str) or key not in CLASSES:
        raise PipelineError(f"unknown model class {key!r}; expected one of {sorted(CLASSES)}")
    return CLASSES[key]


def model_class(key: str) -> type[nn.Module]:
    """The class of table key ``key``, imported now."""
    module, _, name = _target(key).partition(":")
    return getattr(importlib.import_module(module), name)


def build(where: str, key: str, arch: dict, **sizes) -> nn.Module:
    """The module of class ``key`` from ``arch`` (params ``where``, e.g. ``models.x.arch``) and
    the sizes the data offers (a class takes those its Config declares)."""
    cls = model_class(key)
    fields = cls.Config.model_fields
    sizes = {k: v for k, v in sizes.items() if k in fields}
    for name in arch:
        if name not in fields or name in sizes:
            taken = sorted(k for k in fields if k not in sizes)
            raise PipelineError(f"{where}.{name}: not a key of {key}; expected {taken}")
    missing = [k for k in fields if k not in sizes and k not in arch]
    if missing:
        raise PipelineError(f"{where}: {missing[0]} missing; {key} is built from it")
    try:
        return cls(cls.Config(**arch, **sizes))
    except ValidationError as exc:
        error = exc.errors()[0]
        key_name = ".".join(str(p) for p in error["loc"])
        got = error.get("input")
        raise PipelineError(f"{where}.{key_name}: {error['msg']} (got {got!r})") from None


def image_shape(data: str, sizes: dict) -> tuple[int, int, int]:
    """(channels, height, width) of the images a model of ``data`` draws."""
    if data == "fmnist":
        return FMNIST_SHAPE
    return (3, sizes["image_size"], sizes["image_size"])  # RGB at the packed size
