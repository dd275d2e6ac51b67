"""The class table and the model entries: each entry builds from its own arch and the sizes of
its data, saves a config.json that describes it, and loads back as itself; classes are
imported only when asked for."""

import subprocess
import sys

import pytest
import torch

from pipeline.checkpoint import load_model, read_config, save_model
from pipeline.config import load_params
from pipeline.errors import PipelineError
from pipeline.models.registry import FMNIST_SHAPE, build, image_shape, model_class

from .conftest import REPO, run_env

SIZES = {  # what each entry's data gives it: the stages pass these from the data they read
    "fmnist_label": {"input_dim": 784, "cond_dim": 10},
    "fmnist_text": {"input_dim": 784, "cond_dim": 384},
    "fmnist_conv": {"cond_dim": 10},
    "fmnist_text_prior": {"cond_dim": 384},
    "coco_clip": {"image_size": 32, "text_dim": 16},
    "coco_t5": {"image_size": 32, "text_dim": 16},
}
PARAMS = load_params(REPO / "params.yaml")


def meta_of(name: str, entry) -> dict:
    meta = {"name": name, "class": entry.class_name, "data": entry.data}
    meta |= {"conditioning": entry.conditioning, "cond_null_p": entry.train.cond_null_p}
    meta |= {"image_shape": image_shape(entry.data, SIZES[name])}
    if entry.is_text:
        meta |= {"encoder_weights": "w", "encoder_sha256": "0" * 64}
    return meta


@pytest.mark.parametrize("name", sorted(SIZES))
def test_every_entry_builds_from_its_arch_and_loads_back_as_itself(name, tmp_path):
    assert set(PARAMS.models) == set(SIZES)
    entry = PARAMS.model(name)
    model = build(f"models.{name}.arch", entry.class_name, entry.arch, **SIZES[name])
    assert type(model) is model_class(entry.class_name)
    assert {k: getattr(model.config, k) for k in entry.arch} == entry.arch
    save_model(tmp_path, model, meta_of(name, entry))
    loaded, config = load_model(tmp_path)
    assert type(loaded) is type(model) and loaded.config == model.config
    assert config["name"] == name and config["class"] == entry.class_name
    meta = read_config(tmp_path / "config.json").meta
    assert meta.conditioning == entry.conditioning and meta.is_text == entry.is_text
    assert meta.can_guide == (entry.train.cond_null_p > 0)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_the_judge_builds_from_its_section(tmp_path):
    judge = build("judge", "judge", {"feature_dim": PARAMS.judge.feature_dim}, num_classes=10)
    meta = {"name": "judge", "class": "judge", "data": "fmnist", "conditioning": None}
    save_model(tmp_path, judge, meta | {"cond_null_p": 0.0, "image_shape": FMNIST_SHAPE})
    assert type(load_model(tmp_path)[0]) is type(judge)


def test_the_table_imports_no_model_until_one_is_asked_for():
    code = (
        "import sys; from pipeline.models.registry import model_class; "
        "before = sorted(m for m in sys.modules if m.startswith('pipeline.models.')); "
        "model_class('cvae_clip'); "
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


def test_text_models_name_their_encoder_in_their_conditioning():
    conditioning = {n: e.conditioning for n, e in PARAMS.models.items()}
    assert conditioning == {
        "fmnist_label": "label",
        "fmnist_text": "minilm",
        "fmnist_conv": "label",
        "fmnist_text_prior": "minilm",
        "coco_clip": "clip-vit-b-32",
        "coco_t5": "t5-small",
    }


def test_unknown_model_and_unknown_class_in_a_config_are_clear_errors(tmp_path):
    with pytest.raises(PipelineError, match="unknown model 'nope'; expected one of"):
        PARAMS.model("nope")
    (tmp_path / "config.json").write_text('{"model": "vit", "class": "vit"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(PipelineError, match=r"config.json: key class: 'vit' is no model class"):
        load_model(tmp_path)
