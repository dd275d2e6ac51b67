"""Bad input ends in one line naming the file or key and what was expected, not a traceback."""

import shutil

import pytest
import torch
import yaml
from typer.testing import CliRunner

from pipeline.checkpoint import save_model
from pipeline.config import ClipEncoderParams, T5Params
from pipeline.data.fmnist import LABELS
from pipeline.encoders import load_encoder
from pipeline.encoders.hf import minilm_package_dir
from pipeline.errors import PipelineError
from pipeline.models.cvae_mlp import CVAEMLP
from stages.cli import app

from .conftest import REPO, one_error_line
from .encoder_fixtures import make_tiny_clip, make_tiny_t5, trained_on

CPU = torch.device("cpu")
FMNIST = {"class": "cvae_mlp", "data": "fmnist", "image_shape": [1, 28, 28], "cond_null_p": 0.0}


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def label_model(tmp_path):
    torch.manual_seed(0)
    save_model(
        tmp_path / "m",
        CVAEMLP.of(input_dim=784, cond_dim=10, hidden_dim=16, latent_dim=4, fusion="concat"),
        {"name": "fmnist_label", **FMNIST, "conditioning": "label", "labels": list(LABELS)},
    )
    return tmp_path / "m"


@pytest.mark.parametrize("target", ["existing_dir", "new_dir/", "grid.jpg"])
def test_generate_output_must_be_a_png_file(tmp_path, label_model, target):
    (tmp_path / "existing_dir").mkdir()
    output = str(tmp_path / target) + ("/" if target == "existing_dir" else "")
    args = ["generate", "--label", "bag", "--model", str(label_model), "-o", output]
    line = one_error_line(CliRunner().invoke(app, args))
    assert line.startswith(f"error: -o {str(tmp_path / target).rstrip('/')}: ")
    expected = "a directory" if target == "existing_dir" else "not a .png file name"
    assert f": {expected}; give the PNG to write, e.g. -o " in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing_dir", "m"]  # nothing written


def test_generate_from_a_truncated_model_file(label_model):
    truncate(label_model / "model.safetensors")
    args = ["generate", "--label", "bag", "--model", str(label_model), "-o", "x.png"]
    line = one_error_line(CliRunner().invoke(app, args))
    assert "m/model.safetensors: not a readable safetensors file" in line


def test_generate_with_a_truncated_text_encoder_file(tmp_path):
    """fmnist_text embeds the caption with MiniLM, whose weights file here is cut in half."""
    weights = tmp_path / "minilm"
    shutil.copytree(minilm_package_dir(), weights)
    truncate(weights / "model.safetensors")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["embed"]["minilm"]["weights"] = str(weights)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    save_model(
        tmp_path / "m",
        CVAEMLP.of(input_dim=784, cond_dim=384, hidden_dim=16, latent_dim=4, fusion="concat"),
        {"name": "fmnist_text", **FMNIST, **trained_on("minilm", REPO / "params.yaml")},
    )
    args = [
        "generate",
        "--caption",
        "shoes",
        "--model",
        str(tmp_path / "m"),
        "-o",
        "x.png",
        "--params",
        str(tmp_path / "params.yaml"),
    ]
    line = one_error_line(CliRunner().invoke(app, args))
    assert (
        f"embed.minilm.weights: weights '{weights}' could not be loaded ({weights}/model." in line
    )
    assert "Error while deserializing header" in line


@pytest.mark.parametrize("encoder", ["clip-vit-b-32", "t5-small"])
def test_a_truncated_encoder_weights_file_is_one_message(tmp_path, encoder):
    if encoder == "t5-small":
        spec = T5Params(**make_tiny_t5(tmp_path / "t5"))
        weights = tmp_path / "t5" / "model.safetensors"
    else:
        spec = ClipEncoderParams(**make_tiny_clip(tmp_path / "clip"))
        weights = tmp_path / "clip" / "tiny-clip.safetensors"
    truncate(weights)
    with pytest.raises(PipelineError) as info:
        load_encoder(encoder, spec, CPU)
    message = str(info.value)
    assert message.startswith(f"embed.{encoder}.weights: weights ") and "\n" not in message
    assert f"({weights}: Error while deserializing header" in message


def test_report_on_a_truncated_metrics_file(tmp_path, monkeypatch):
    metrics = tmp_path / "metrics" / "fmnist_label" / "eval.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text('{"test_nelbo_nats": 237.3, "judge_acc')
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app, ["report", "fmnist_label", "--params", str(REPO / "params.yaml")]
    )
    line = one_error_line(result)
    assert line.startswith("error: metrics/fmnist_label/eval.json: not a readable metrics JSON (")
    assert not (tmp_path / "reports").exists()


def test_an_infinite_timeout_is_one_line_before_any_work(tmp_path, monkeypatch):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["download"]["fmnist"]["timeout_s"] = float("inf")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["download", "fmnist", "--params", "params.yaml"])
    assert one_error_line(result) == (
        "error: params.yaml: invalid params: download.fmnist.timeout_s: Input should be a "
        "finite number (got inf)"
    )
    assert list(tmp_path.iterdir()) == [tmp_path / "params.yaml"]
