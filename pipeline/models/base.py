"""What every model shares: a typed config that builds it and that config.json is written from.

Each model file holds its class and its config class (as nanoGPT's ``GPTConfig``): the config
names every constructor argument, with its type and range, and nothing else. The config has
no defaults: the params schema (pipeline/config.py) holds them, and the data gives the sizes
(``cond_dim``, ``image_size``, ...). ``config.json`` is ``model.config`` dumped, so a saved
model is validated by the same class when it is loaded (pipeline/checkpoint.py).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class ModelConfig(BaseModel):
    # strict: "16" or 16.0 is no size; extra: a key the model does not take is an error.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Configured:
    """Mixin of a model class: ``kind`` (config.json's "model"), ``Config``, ``self.config``."""

    kind: ClassVar[str]
    Config: ClassVar[type[ModelConfig]]
    config: ModelConfig

    @classmethod
    def of(cls, **values):
        """Built from keyword values through ``Config``: ``CVAEMLP.of(input_dim=784, ...)``."""
        return cls(cls.Config(**values))
