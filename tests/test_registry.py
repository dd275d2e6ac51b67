"""The model registry: one entry per model, each buildable from its own typed params, each
imported only when asked for."""

import subprocess
import sys

import pytest
import torch

from pipeline.checkpoint import load_model, save_model
from pipeline.config import load_params
from pipeline.errors import PipelineError
from pipeline.models.registry import GENERATIVE, REGISTRY, model_spec

from .conftest import REPO, run_env

SIZES = {  # what each model's data gives it: the stages pass these from the data they read
    "fmnist_label": {"input_dim": 784, "cond_dim": 10},
    "fmnist_text": {"input_dim": 784, "cond_dim": 384},
    "fmnist_conv": {"cond_dim": 10},
    "fmnist_text_prior": {"cond_dim": 384},
    "coco_clip": {"image_size": 32, "text_dim": 16},
    "coco_t5": {"image_size": 32, "text_dim": 16},
    "judge": {"num_classes": 10},
}
META = {  # what config.json records of the data beside the model's config
    "fmnist_label": {"dataset": "fmnist"},
    "fmnist_conv": {"dataset": "fmnist"},
    "judge": {"dataset": "fmnist", "test_accuracy": 0.9},
}
TEXT_META = {"dataset": "fmnist", "encoder": "minilm", "encoder_sha256": "0" * 64}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_model_builds_from_its_params_and_loads_back_as_itself(name, tmp_path):
    spec = model_spec(name)
    params = spec.train_params(load_params(REPO / "params.yaml"))
    assert isinstance(params, spec.train_type)
    model = spec.build(params, **SIZES[name])
    assert type(model) is spec.cls and model.kind == spec.cls.kind
    # Every field of the model's config is a param of its section or a size from the data.
    arch = set(type(model.config).model_fields) - set(SIZES[name])
    assert arch <= set(type(params).model_fields)
    assert {k: getattr(model.config, k) for k in arch} == {k: getattr(params, k) for k in arch}
    save_model(tmp_path, model, name, META.get(name, TEXT_META))
    loaded, config = load_model(tmp_path)
    assert type(loaded) is spec.cls and loaded.config == model.config
    assert config["name"] == name and config["model"] == spec.cls.kind
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_the_registry_imports_no_model_until_one_is_asked_for():
    code = (
        "import sys; from pipeline.models.registry import model_spec; "
        "before = sorted(m for m in sys.modules if m.startswith('pipeline.models.')); "
        "model_spec('coco_clip').cls; "
        "after = sorted(m for m in sys.modules if m.startswith('pipeline.models.')); "
        "print(before); print(after)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=run_env(), capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == "['pipeline.models.registry']"
    assert eval(out[1]) == [  # noqa: S307 (our own printed list)
        "pipeline.models.base",
        "pipeline.models.bernoulli",
        "pipeline.models.cvae_clip",
        "pipeline.models.fusion",
        "pipeline.models.registry",
        "pipeline.models.stability",
    ]


def test_text_models_name_their_encoder_in_their_params():
    params = load_params(REPO / "params.yaml")
    encoders = {
        n: s.train_params(params).encoder for n, s in GENERATIVE.items() if s.conditioning == "text"
    }
    assert encoders == {
        "fmnist_text": "minilm",
        "fmnist_text_prior": "minilm",
        "coco_clip": "clip-vit-b-32",
        "coco_t5": "t5-small",
    }
    assert GENERATIVE["fmnist_label"].conditioning == "label"
    assert "judge" not in GENERATIVE  # a classifier: trained by `t2i judge`, generates nothing


def test_unknown_model_and_unknown_name_in_a_config_are_clear_errors(tmp_path):
    with pytest.raises(PipelineError, match="unknown model 'nope'; expected one of"):
        model_spec("nope")
    (tmp_path / "config.json").write_text('{"model": "vit", "name": "vit"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(PipelineError, match=r"config.json: key name: 'vit' is no model of the"):
        load_model(tmp_path)
