"""One registry of the models: name -> class, params, conditioning, data, loss and evaluation.

Adding a model touches its class (pipeline/models/), its params class (pipeline/config.py),
one entry here, and its stages in dvc.yaml. ``t2i train``, ``evaluate``, ``generate`` and
``report`` all dispatch through it, and loading a saved model finds its class here.

conditioning  ``label``: a one-hot class label; ``text``: caption embeddings of the encoder
              its params name (``train.<name>.encoder``); None: the judge, a classifier
data          what it trains on: ``fmnist`` (IDX files) or ``coco`` (shards + embeddings)
evaluation    which evaluate stage scores it (None: the judge scores itself as it trains)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel
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
from pipeline.models.cvae_clip import CVAEClip
from pipeline.models.cvae_gated import CVAEGated
from pipeline.models.cvae_mlp import CVAEMLP
from pipeline.models.cvae_prior import CVAEPrior
from pipeline.models.judge import JudgeCNN

FMNIST_SHAPE = (1, 28, 28)  # §2.1: grey 28x28, flattened to 784 inside the MLP


@dataclass(frozen=True)
class ModelSpec:
    name: str
    cls: type[nn.Module]
    summary: str  # one line, with the paper section: `t2i --help`
    train_section: str  # dotted params.yaml key of its training params
    train_type: type[BaseModel]
    conditioning: Literal["label", "text"] | None
    data: Literal["fmnist", "coco"]
    loss: Literal["bce_kl", "mse_beta_kl", "cross_entropy"]  # bce_kl: the negative ELBO
    build: Callable[..., nn.Module]  # (train params, **sizes from the data) -> the module
    evaluation: Literal["fmnist_label", "fmnist_text", "coco"] | None = None
    evaluate_type: type[BaseModel] | None = None

    def train_params(self, params: Params):
        return _section(params, self.train_section, self.train_type)

    def evaluate_params(self, params: Params):
        if self.evaluate_type is None:
            raise PipelineError(f"model {self.name!r} has no evaluate stage")
        return _section(params, f"evaluate.{self.name}", self.evaluate_type)

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


def _mlp(p, cond_dim: int) -> CVAEMLP:
    return CVAEMLP(784, cond_dim, p.hidden_dim, p.latent_dim, getattr(p, "fusion", "concat"))


def _prior(p, cond_dim: int) -> CVAEPrior:
    text = {k: getattr(p, k) for k in ("fusion", "cond_noise", "cond_dropout") if hasattr(p, k)}
    return CVAEPrior(
        cond_dim,
        p.latent_dim,
        p.width,
        p.cond_hidden,
        p.prior,
        arch=p.arch,
        likelihood=p.likelihood,
        **text,
    )


def _clip(p, image_size: int, text_dim: int) -> CVAEClip:
    return CVAEClip(
        image_size, text_dim, p.latent_dim, p.width, p.fusion, p.feature_norm, p.logvar_bound
    )


def _gated(p, image_size: int, text_dim: int) -> CVAEGated:
    return CVAEGated(image_size, text_dim, p.latent_dim, p.fusion, p.beta, p.logvar_bound)


def _judge(p, num_classes: int) -> JudgeCNN:
    return JudgeCNN(num_classes=num_classes)


_SPECS = [
    ModelSpec(
        "fmnist_label",
        CVAEMLP,
        "paper §2.1: Fashion-MNIST MLP CVAE, one-hot labels",
        train_section="train.fmnist_label",
        train_type=TrainFmnistLabel,
        conditioning="label",
        data="fmnist",
        loss="bce_kl",
        build=_mlp,
        evaluation="fmnist_label",
        evaluate_type=EvaluateFmnistLabel,
    ),
    ModelSpec(
        "fmnist_text",
        CVAEMLP,
        "§2.1 with captions: embeddings of class phrasings",
        train_section="train.fmnist_text",
        train_type=TrainFmnistText,
        conditioning="text",
        data="fmnist",
        loss="bce_kl",
        build=_mlp,
        evaluation="fmnist_text",
        evaluate_type=EvaluateFmnistText,
    ),
    ModelSpec(
        "fmnist_conv",
        CVAEPrior,
        "(ours) conv CVAE with a learned prior p(z|c), one-hot labels",
        train_section="train.fmnist_conv",
        train_type=TrainFmnistPrior,
        conditioning="label",
        data="fmnist",
        loss="bce_kl",
        build=_prior,
        evaluation="fmnist_label",
        evaluate_type=EvaluateFmnistLabel,
    ),
    ModelSpec(
        "fmnist_text_prior",
        CVAEPrior,
        "(ours) CVAE with a learned prior and noisy captions",
        train_section="train.fmnist_text_prior",
        train_type=TrainFmnistTextPrior,
        conditioning="text",
        data="fmnist",
        loss="bce_kl",
        build=_prior,
        evaluation="fmnist_text",
        evaluate_type=EvaluateFmnistText,
    ),
    ModelSpec(
        "coco_clip",
        CVAEClip,
        "paper §2.2: COCO conv CVAE, CLIP caption embeddings",
        train_section="train.coco_clip",
        train_type=TrainCocoClip,
        conditioning="text",
        data="coco",
        loss="bce_kl",
        build=_clip,
        evaluation="coco",
        evaluate_type=EvaluateCoco,
    ),
    ModelSpec(
        "coco_t5",
        CVAEGated,
        "paper §2.3: COCO conv CVAE, T5 features, gated fusion",
        train_section="train.coco_t5",
        train_type=TrainCocoT5,
        conditioning="text",
        data="coco",
        loss="mse_beta_kl",
        build=_gated,
        evaluation="coco",
        evaluate_type=EvaluateCoco,
    ),
    ModelSpec(
        "judge",
        JudgeCNN,
        "(ours) CNN classifier that scores Fashion-MNIST samples",
        train_section="judge",
        train_type=Judge,
        conditioning=None,
        data="fmnist",
        loss="cross_entropy",
        build=_judge,
    ),
]
REGISTRY = {spec.name: spec for spec in _SPECS}
GENERATIVE = {name: spec for name, spec in REGISTRY.items() if spec.conditioning}


def model_spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise PipelineError(f"unknown model {name!r}; expected one of {sorted(GENERATIVE)}")
    return REGISTRY[name]


def model_class(kind: str, where: str) -> type[nn.Module]:
    """The class of config.json's ``model`` (``cvae_mlp``, ``cvae_clip``, ...)."""
    classes = {spec.cls.kind: spec.cls for spec in REGISTRY.values()}
    if kind not in classes:
        raise PipelineError(f"{where}: model {kind!r} unknown; expected one of {sorted(classes)}")
    return classes[kind]


def spec_of_config(config: dict, where: str) -> ModelSpec:
    """The registry entry of a saved model: the name it was trained as (``name``), or for a
    file without one, the one entry of its class and conditioning (text when it names an
    encoder)."""
    if "name" in config:
        return model_spec(config["name"])
    kind, text = config.get("model"), bool(config.get("encoder"))
    found = [
        s for s in REGISTRY.values() if s.cls.kind == kind and (s.conditioning == "text") == text
    ]
    if len(found) != 1:
        raise PipelineError(
            f"{where}: no model of the registry is a {kind!r} "
            f"conditioned on {'text' if text else 'labels'}"
        )
    return found[0]
