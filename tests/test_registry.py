"""The model registry: one entry per model, each buildable from its own typed params."""

import pytest
import torch

from pipeline.checkpoint import load_model, save_model
from pipeline.config import load_params
from pipeline.errors import PipelineError
from pipeline.models.registry import GENERATIVE, REGISTRY, model_spec, spec_of_config

from .conftest import REPO

SIZES = {  # what each model's data gives it: the stages pass these from the data they read
    "fmnist_label": {"cond_dim": 10},
    "fmnist_text": {"cond_dim": 384},
    "fmnist_conv": {"cond_dim": 10},
    "fmnist_text_prior": {"cond_dim": 384},
    "coco_clip": {"image_size": 32, "text_dim": 16},
    "coco_t5": {"image_size": 32, "text_dim": 16},
    "judge": {"num_classes": 10},
}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_model_builds_from_its_params_and_loads_back_as_itself(name, tmp_path):
    spec = model_spec(name)
    params = spec.train_params(load_params(REPO / "params.yaml"))
    assert isinstance(params, spec.train_type)
    model = spec.build(params, **SIZES[name])
    assert type(model) is spec.cls and model.config()["model"] == spec.cls.kind
    save_model(tmp_path, model, {"name": name})
    loaded, config = load_model(tmp_path)
    assert type(loaded) is spec.cls and loaded.config() == model.config()
    assert spec_of_config(config, "config.json") is spec
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


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


def test_files_without_a_name_resolve_by_class_and_conditioning():
    assert spec_of_config({"model": "cvae_mlp"}, "c").name == "fmnist_label"
    assert spec_of_config({"model": "cvae_mlp", "encoder": "minilm"}, "c").name == "fmnist_text"
    assert spec_of_config({"model": "cvae_gated", "encoder": "t5-small"}, "c").name == "coco_t5"
    assert spec_of_config({"model": "cvae_conv", "name": "fmnist_conv"}, "c").name == "fmnist_conv"
    with pytest.raises(PipelineError, match="c: no model of the registry is a 'vit'"):
        spec_of_config({"model": "vit"}, "c")


def test_unknown_model_and_unknown_class_are_clear_errors(tmp_path):
    with pytest.raises(PipelineError, match="unknown model 'nope'; expected one of"):
        model_spec("nope")
    (tmp_path / "config.json").write_text('{"model": "vit", "init_args": []}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(PipelineError, match=r"config.json: model 'vit' unknown; expected one of"):
        load_model(tmp_path)
