"""A saved model is checked on load, never trusted (issue 21, cases 7 and 8): config.json is
validated by the model's own config class, tensor names and shapes must match the module it
builds (checked on the meta device, so absurd sizes allocate nothing), and every weight must
be finite. Each tampered folder ends in one line naming the file and the key, through the
real `t2i generate` and `t2i evaluate`."""

import json
import subprocess
import time

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from pipeline.checkpoint import load_model, save_model
from pipeline.data.fmnist import LABELS
from pipeline.models.cvae_clip import CVAEClip
from pipeline.models.cvae_mlp import CVAEMLP
from stages.cli import app

from .conftest import REPO, one_error_line, run_env
from .encoder_fixtures import trained_on

SIZES = {"input_dim": 784, "cond_dim": 10, "hidden_dim": 16, "latent_dim": 4, "fusion": "concat"}
FMNIST = {"data": "fmnist", "image_shape": [1, 28, 28], "cond_null_p": 0.0}
LABEL_META = {"name": "fmnist_label", "class": "cvae_mlp", **FMNIST, "conditioning": "label"}
LABEL_META["labels"] = list(LABELS)


def text_meta(**identity) -> dict:
    """What the stage records of an MLP CVAE on MiniLM caption embeddings."""
    encoder = {"conditioning": "minilm", "encoder_weights": "package", "encoder_sha256": "0" * 64}
    return {"name": "fmnist_text", "class": "cvae_mlp", **FMNIST, **encoder, **identity}


@pytest.fixture
def label_model(tmp_path):
    torch.manual_seed(0)
    save_model(tmp_path / "m", CVAEMLP.of(**SIZES), LABEL_META)
    return tmp_path / "m"


def generate(model_dir, *extra):
    args = ["generate", "--label", "bag", "--model", str(model_dir), "-o", "x.png", *extra]
    args += ["--params", str(REPO / "params.yaml")]
    return CliRunner().invoke(app, args)


def edit_config(model_dir, **changes):
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is ...:
            del config[key]
        else:
            config[key] = value
    path.write_text(json.dumps(config))


def test_an_untouched_model_loads_and_generates(label_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = generate(label_model)
    assert result.exit_code == 0, result.output
    model, config = load_model(label_model)
    assert config == {**LABEL_META, "model": "cvae_mlp", **SIZES}


CONFIG_CASES = [  # (config.json changes, the one line's end)
    ({"init_args": ["hidden_dim"]}, "key init_args: unknown key; train the model again"),
    ({"hidden_dim": "16"}, "key hidden_dim: Input should be a valid integer (got '16')"),
    ({"hidden_dim": -1}, "key hidden_dim: Input should be greater than or equal to 1 (got -1)"),
    ({"hidden_dim": 1e8}, "key hidden_dim: Input should be a valid integer (got 100000000.0)"),
    ({"hidden_dim": 10**8}, "key hidden_dim: Input should be less than or equal to 65536"),
    ({"latent_dim": True}, "key latent_dim: Input should be a valid integer (got True)"),
    ({"fusion": "sum"}, "key fusion: Input should be 'concat', 'add' or 'gated' (got 'sum')"),
    ({"model": ["cvae_mlp"]}, "key model: ['cvae_mlp'], but class cvae_mlp is a 'cvae_mlp'"),
    ({"model": "cvae_clip"}, "key model: 'cvae_clip', but class cvae_mlp is a 'cvae_mlp'"),
    ({"cond_dim": ...}, "key cond_dim: Field required; train the model again"),
    ({"class": ...}, "key class: None is no model class; expected one of ['cvae_clip', "),
    ({"class": ["cvae_mlp"]}, "key class: ['cvae_mlp'] is no model class; expected one of"),
    ({"class": "cvae_prior"}, "key model: 'cvae_mlp', but class cvae_prior is a 'cvae_prior'"),
    ({"name": ...}, "key name: Field required; train the model again"),
    ({"name": ["fmnist_label"]}, "key name: Input should be a valid string (got ['fmnist_label'])"),
    ({"data": "imagenet"}, "key data: Input should be 'fmnist' or 'coco' (got 'imagenet')"),
    ({"dataset": "fmnist"}, "key dataset: unknown key; train the model again"),
    ({"image_shape": [1, 28]}, "key image_shape: List should have at least 3 items"),
    ({"cond_null_p": 1.5}, "key cond_null_p: Input should be less than 1 (got 1.5)"),
    ({"conditioning": "bert"}, "key conditioning: Input should be 'label', 'clip-vit-b-32', "),
    ({"hidden_dim": 17}, "tensor fc1.weight has shape [16, 794], but config.json builds [17, 794]"),
]


@pytest.mark.parametrize(("changes", "expected"), CONFIG_CASES)
def test_a_tampered_config_is_one_line_naming_file_and_key(label_model, changes, expected):
    edit_config(label_model, **changes)
    line = one_error_line(generate(label_model))
    assert line.startswith(f"error: {label_model}/"), line
    assert expected in line, line


@pytest.mark.parametrize("key", ["encoder_weights", "encoder_sha256"])
def test_a_text_model_without_its_encoder_is_refused(tmp_path, key):
    model = CVAEMLP.of(**{**SIZES, "cond_dim": 384})
    save_model(tmp_path / "m", model, text_meta())
    edit_config(tmp_path / "m", **{key: ...})
    line = one_error_line(generate(tmp_path / "m"))
    assert f"{tmp_path}/m/config.json: key {key}: missing; a text-conditioned model" in line


@pytest.mark.parametrize("tamper", ["missing", "extra", "shape", "not_safetensors"])
def test_tampered_tensors_are_one_line_naming_the_tensor(label_model, tamper):
    path = label_model / "model.safetensors"
    tensors = load_file(str(path))
    if tamper == "missing":
        del tensors["fc4.bias"]
    elif tamper == "extra":
        tensors["backdoor.weight"] = torch.zeros(2)
    elif tamper == "shape":
        tensors["fc2_mean.weight"] = torch.zeros(5, 16)
    if tamper == "not_safetensors":
        path.write_bytes(b"\x00" * 64)
    else:
        save_file(tensors, str(path))
    line = one_error_line(generate(label_model))
    assert line.startswith(f"error: {path}: "), line
    assert {
        "missing": "tensor fc4.bias missing; train the model again",
        "extra": "tensor backdoor.weight is not a weight of a cvae_mlp built from config.json",
        "shape": "tensor fc2_mean.weight has shape [5, 16], but config.json builds [4, 16]",
        "not_safetensors": "not a readable safetensors file",
    }[tamper] in line


def test_huge_sizes_in_bounds_allocate_nothing_before_the_shape_check(tmp_path):
    """width 1024 at 2048 px would be ~2.7e11 parameters (a terabyte): built on the meta
    device, the shapes disagree with the small file at once."""
    meta = {"name": "coco_clip", "class": "cvae_clip", "data": "coco", "image_shape": [3, 32, 32]}
    meta |= {"conditioning": "clip-vit-b-32", "cond_null_p": 0.0, "encoder_weights": "openai"}
    meta["encoder_sha256"] = "0" * 64
    small = dict(image_size=32, text_dim=8, latent_dim=4, width=4, fusion="concat")
    save_model(tmp_path / "m", CVAEClip.of(**small, feature_norm=True, logvar_bound=8.0), meta)
    edit_config(tmp_path / "m", width=1024, image_size=2048)
    start = time.perf_counter()
    line = one_error_line(generate(tmp_path / "m"))
    assert time.perf_counter() - start < 30
    assert "model.safetensors: tensor image_encoder.0.0.weight has shape [4, 3, 4, 4], but" in line


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_by_generate(label_model, value):
    path = label_model / "model.safetensors"
    tensors = load_file(str(path))
    tensors["fc3.weight"][0, 1] = value
    save_file(tensors, str(path))
    line = one_error_line(generate(label_model))
    assert line == (
        f"error: {path}: tensor fc3.weight holds non-finite values (NaN or Inf); "
        "train the model again"
    )
    assert not (label_model.parent / "x.png").exists()


def test_evaluate_on_a_nan_model_exits_with_one_line(tmp_path, label_model):
    """The real `t2i evaluate` in a folder holding a NaN model: one line, no LinAlgError."""
    folder = tmp_path / "models" / "fmnist_label"
    folder.parent.mkdir()
    label_model.rename(folder)
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["fc4.bias"][:] = float("nan")
    save_file(tensors, str(folder / "model.safetensors"))
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    result = subprocess.run(
        ["t2i", "evaluate", "fmnist_label"],
        cwd=tmp_path,
        env=run_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "LinAlgError" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: models/fmnist_label/model.safetensors: tensor fc4.bias holds non-finite "
        "values (NaN or Inf); train the model again"
    )
    assert not (tmp_path / "metrics").exists()


def test_generate_refuses_encoder_weights_other_than_the_models(tmp_path):
    """Trained on other MiniLM weights (another sha256) than params.yaml names: refused,
    saying which weights the model needs."""
    meta = text_meta(**trained_on("minilm", REPO / "params.yaml"))
    meta |= {"encoder_weights": "my-finetuned-minilm", "encoder_sha256": "ab" * 32}
    model = CVAEMLP.of(**{**SIZES, "cond_dim": 384})
    save_model(tmp_path / "m", model, meta)
    args = ["--caption", "a shoe", "--params", str(REPO / "params.yaml")]
    result = CliRunner().invoke(
        app, ["generate", "--model", str(tmp_path / "m"), "-o", str(tmp_path / "x.png"), *args]
    )
    line = one_error_line(result)
    assert line.startswith(f"error: {tmp_path}/m/config.json: key encoder_sha256: the model ")
    assert "needs the minilm weights 'my-finetuned-minilm' (sha256 " + "ab" * 32 + ")" in line
    assert "but params.yaml's embed.minilm.weights gives 'package'" in line
    assert not (tmp_path / "x.png").exists()
    save_model(tmp_path / "ok", model, text_meta(**trained_on("minilm", REPO / "params.yaml")))
    result = CliRunner().invoke(
        app, ["generate", "--model", str(tmp_path / "ok"), "-o", str(tmp_path / "x.png"), *args]
    )
    assert result.exit_code == 0, result.output
