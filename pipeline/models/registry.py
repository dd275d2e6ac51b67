"""One registry of the models: name -> class, params, conditioning, data, loss and evaluation.

Adding a model touches its file (pipeline/models/: the class and its config class), its params
class (pipeline/config.py), one entry here, and its stages in dvc.yaml. ``t2i train``,
``evaluate``, ``generate`` and ``report`` all dispatch through it, and loading a saved model
finds its class here.

Each entry names its class as a ``"module:Class"`` string, imported only when that model is
asked for (as pipeline/encoders/__init__.py does): a stage imports the one model it runs, and
scripts/stage_deps.py gives it that model's file as a dep, not the others'.

conditioning  ``label``: a one-hot class label; ``text``: caption embeddings of the encoder
              its params name (``train.<name>.encoder``); None: the judge, a classifier
data          what it trains on: ``fmnist`` (IDX files) or ``coco`` (shards + embeddings)
evaluation    which evaluate stage scores it (None: the judge scores itself as it trains)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ValidationError
from torch import nn

from pipeline.config import (
    EvaluateCoco,
    EvaluateFmnistLabel,
    EvaluateFmnistText,
    Judge,
    Params,
    TrainCocoClip,
    TrainCocoT5,
    TrainFmnistLabel,
    TrainFmnistPrior,
    TrainFmnistText,
    TrainFmnistTextPrior,
)
from pipeline.errors import PipelineError

FMNIST_SHAPE = (1, 28, 28)  # §2.1: grey 28x28, flattened to 784 inside the MLP


@dataclass(frozen=True)
class ModelSpec:
    name: str
    target: str  # "pipeline.models.<file>:<Class>", imported on first use
    summary: str  # one line, with the paper section: `t2i --help`
    train_section: str  # dotted params.yaml key of its training params
    train_type: type[BaseModel]
    conditioning: Literal["label", "text"] | None
    data: Literal["fmnist", "coco"]
    loss: Literal["bce_kl", "mse_beta_kl", "cross_entropy"]  # bce_kl: the negative ELBO
    evaluation: Literal["fmnist_label", "fmnist_text", "coco"] | None = None
    evaluate_type: type[BaseModel] | None = None

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]

    @property
    def cls(self) -> type[nn.Module]:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)

    def train_params(self, params: Params):
        return _section(params, self.train_section, self.train_type)

    def evaluate_params(self, params: Params):
        if self.evaluate_type is None:
            raise PipelineError(f"model {self.name!r} has no evaluate stage")
        return _section(params, f"evaluate.{self.name}", self.evaluate_type)

    def build(self, p: BaseModel, **sizes) -> nn.Module:
        """The module from its train params ``p`` and the sizes the data offers (``input_dim``,
        ``cond_dim``, ``image_size``, ...; a model takes those its config class declares):
        every field of the config is one of the two, by name and type-checked; a field that
        is neither is an error."""
        cls = self.cls
        sizes = {k: v for k, v in sizes.items() if k in cls.Config.model_fields}
        values = p.model_dump()
        missing = [k for k in cls.Config.model_fields if k not in sizes and k not in values]
        if missing:  # a registry entry whose params section lacks an architecture key
            raise TypeError(f"{self.train_section} has no {missing} for {cls.__name__}")
        arch = {k: values[k] for k in cls.Config.model_fields if k not in sizes}
        try:
            return cls(cls.Config(**arch, **sizes))
        except ValidationError as exc:
            raise PipelineError(f"{self.train_section}: {exc.errors()[0]['msg']}") from None

    def image_shape(self, config: dict) -> tuple[int, int, int]:
        """(channels, height, width) of the images it generates, from its config.json."""
        if self.data == "fmnist":
            return FMNIST_SHAPE
        return (3, config["image_size"], config["image_size"])  # RGB at the packed size


def _section(params: Params, key: str, expected: type[BaseModel]):
    node = params
    for part in key.split("."):
        node = getattr(node, part)
    if not isinstance(node, expected):  # a registry entry that names the wrong section
        raise TypeError(f"params {key} is a {type(node).__name__}, not a {expected.__name__}")
    return node


_SPECS = [
    ModelSpec(
        "fmnist_label",
        "pipeline.models.cvae_mlp:CVAEMLP",
        "paper §2.1: Fashion-MNIST MLP CVAE, one-hot labels",
        train_section="train.fmnist_label",
        train_type=TrainFmnistLabel,
        conditioning="label",
        data="fmnist",
        loss="bce_kl",
        evaluation="fmnist_label",
        evaluate_type=EvaluateFmnistLabel,
    ),
    ModelSpec(
        "fmnist_text",
        "pipeline.models.cvae_mlp:CVAEMLP",
        "§2.1 with captions: embeddings of class phrasings",
        train_section="train.fmnist_text",
        train_type=TrainFmnistText,
        conditioning="text",
        data="fmnist",
        loss="bce_kl",
        evaluation="fmnist_text",
        evaluate_type=EvaluateFmnistText,
    ),
    ModelSpec(
        "fmnist_conv",
        "pipeline.models.cvae_prior:CVAEPrior",
        "(ours) conv CVAE with a learned prior p(z|c), one-hot labels",
        train_section="train.fmnist_conv",
        train_type=TrainFmnistPrior,
        conditioning="label",
        data="fmnist",
        loss="bce_kl",
        evaluation="fmnist_label",
        evaluate_type=EvaluateFmnistLabel,
    ),
    ModelSpec(
        "fmnist_text_prior",
        "pipeline.models.cvae_prior:CVAEPrior",
        "(ours) CVAE with a learned prior and noisy captions",
        train_section="train.fmnist_text_prior",
        train_type=TrainFmnistTextPrior,
        conditioning="text",
        data="fmnist",
        loss="bce_kl",
        evaluation="fmnist_text",
        evaluate_type=EvaluateFmnistText,
    ),
    ModelSpec(
        "coco_clip",
        "pipeline.models.cvae_clip:CVAEClip",
        "paper §2.2: COCO conv CVAE, CLIP caption embeddings",
        train_section="train.coco_clip",
        train_type=TrainCocoClip,
        conditioning="text",
        data="coco",
        loss="bce_kl",
        evaluation="coco",
        evaluate_type=EvaluateCoco,
    ),
    ModelSpec(
        "coco_t5",
        "pipeline.models.cvae_gated:CVAEGated",
        "paper §2.3: COCO conv CVAE, T5 features, gated fusion",
        train_section="train.coco_t5",
        train_type=TrainCocoT5,
        conditioning="text",
        data="coco",
        loss="mse_beta_kl",
        evaluation="coco",
        evaluate_type=EvaluateCoco,
    ),
    ModelSpec(
        "judge",
        "pipeline.models.judge:JudgeCNN",
        "(ours) CNN classifier that scores Fashion-MNIST samples",
        train_section="judge",
        train_type=Judge,
        conditioning=None,
        data="fmnist",
        loss="cross_entropy",
    ),
]
REGISTRY = {spec.name: spec for spec in _SPECS}
GENERATIVE = {name: spec for name, spec in REGISTRY.items() if spec.conditioning}


def model_spec(name: str) -> ModelSpec:
    if not isinstance(name, str) or name not in REGISTRY:
        raise PipelineError(f"unknown model {name!r}; expected one of {sorted(REGISTRY)}")
    return REGISTRY[name]
