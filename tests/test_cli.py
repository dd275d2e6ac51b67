import torch
from PIL import Image
from typer.testing import CliRunner

from pipeline.checkpoint import save_model
from pipeline.cli import HELP, MODELS, STAGE_MODULES, app
from pipeline.models.cvae_mlp import CVAEMLP

from .conftest import REPO


def test_help_explains_the_pipeline():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "dvc repro" in result.output and "train" in result.output


def test_help_lists_every_command_and_every_model():
    output = CliRunner().invoke(app, ["--help"]).output
    for command in app.registered_commands:
        assert f"  {command.callback.__name__} " in HELP, command.callback.__name__
    assert set(STAGE_MODULES["train"]) == set(STAGE_MODULES["evaluate"]) == set(MODELS)
    for model in MODELS:
        assert f"  {model} " in output, model


def test_generate_writes_a_grid_for_a_label(tmp_path):
    torch.manual_seed(0)
    save_model(tmp_path / "m", CVAEMLP(784, 10, 16, 4))
    out = tmp_path / "sneaker.png"
    args = [
        "generate",
        "--label",
        "sneaker",
        "-n",
        "16",
        "-o",
        str(out),
        "--model",
        str(tmp_path / "m"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (8 * 58 + 2, 2 * 58 + 2)


def test_generate_unknown_label_is_a_clear_error(tmp_path):
    save_model(tmp_path / "m", CVAEMLP(784, 10, 16, 4))
    result = CliRunner().invoke(app, ["generate", "--label", "hat", "--model", str(tmp_path / "m")])
    assert result.exit_code == 1
    assert "unknown Fashion-MNIST label 'hat'" in result.output


def test_unknown_model_is_a_clear_error():
    result = CliRunner().invoke(app, ["train", "nope"])
    assert result.exit_code == 1 and "unknown model 'nope'" in result.output


def test_generate_from_a_caption_with_a_text_model(tmp_path):
    torch.manual_seed(0)
    save_model(tmp_path / "m", CVAEMLP(784, 384, 16, 4), {"encoder": "minilm"})
    out = tmp_path / "shoes.png"
    args = ["generate", "--caption", "white running shoes", "-n", "8", "-o", str(out),
            "--model", str(tmp_path / "m"), "--params", str(REPO / "params.yaml")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (8 * 58 + 2, 58 + 2)
    result = CliRunner().invoke(app, ["generate", "--label", "bag", "--model", str(tmp_path / "m")])
    assert result.exit_code == 1 and "conditioned on text: give --caption" in result.output
