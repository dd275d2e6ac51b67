import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from pipeline.checkpoint import save_model
from pipeline.models.cvae_clip import CVAEClip
from pipeline.models.cvae_gated import CVAEGated
from pipeline.models.cvae_mlp import CVAEMLP
from pipeline.models.judge import JudgeCNN
from stages.cli import HELP, MODELS, app
from stages.commands import STAGE_MODULES

from .conftest import REPO
from .encoder_fixtures import make_tiny_clip, make_tiny_t5, trained_on


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
    save_model(
        tmp_path / "m",
        CVAEMLP.of(input_dim=784, cond_dim=10, hidden_dim=16, latent_dim=4, fusion="concat"),
        "fmnist_label",
        {"dataset": "fmnist"},
    )
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
    save_model(
        tmp_path / "m",
        CVAEMLP.of(input_dim=784, cond_dim=10, hidden_dim=16, latent_dim=4, fusion="concat"),
        "fmnist_label",
        {"dataset": "fmnist"},
    )
    result = CliRunner().invoke(app, ["generate", "--label", "hat", "--model", str(tmp_path / "m")])
    assert result.exit_code == 1
    assert "unknown Fashion-MNIST label 'hat'" in result.output


def test_unknown_model_is_a_clear_error():
    result = CliRunner().invoke(app, ["train", "nope"])
    assert result.exit_code == 1 and "unknown model 'nope'" in result.output


def test_generate_from_a_caption_with_a_text_model(tmp_path):
    torch.manual_seed(0)
    save_model(
        tmp_path / "m",
        CVAEMLP.of(input_dim=784, cond_dim=384, hidden_dim=16, latent_dim=4, fusion="concat"),
        "fmnist_text",
        trained_on("minilm", REPO / "params.yaml"),
    )
    out = tmp_path / "shoes.png"
    args = [
        "generate",
        "--caption",
        "white running shoes",
        "-n",
        "8",
        "-o",
        str(out),
        "--model",
        str(tmp_path / "m"),
        "--params",
        str(REPO / "params.yaml"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (8 * 58 + 2, 58 + 2)
    result = CliRunner().invoke(app, ["generate", "--label", "bag", "--model", str(tmp_path / "m")])
    assert result.exit_code == 1 and "conditioned on text: give --caption" in result.output


@pytest.mark.parametrize(
    ("name", "model", "encoder"),
    [
        (
            "coco_clip",
            CVAEClip.of(
                image_size=224,
                text_dim=16,
                latent_dim=8,
                width=8,
                fusion="concat",
                feature_norm=True,
                logvar_bound=8.0,
            ),
            "clip-vit-b-32",
        ),
        (
            "coco_t5",
            CVAEGated.of(
                image_size=224,
                text_dim=16,
                latent_dim=8,
                fusion="gated",
                beta=1.0,
                logvar_bound=8.0,
            ),
            "t5-small",
        ),
    ],
)
def test_generate_draws_224_rgb_grids_for_any_caption_from_a_coco_model(
    tmp_path, name, model, encoder
):
    torch.manual_seed(0)
    # The encoder it was trained on: a tiny one (16-d), loaded as the real ones are.
    make = make_tiny_clip if encoder == "clip-vit-b-32" else make_tiny_t5
    weights = make(tmp_path / "w")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"embed": {encoder: weights}}))
    meta = trained_on(encoder, tmp_path / "params.yaml", "coco")
    save_model(tmp_path / "m", model, name, meta)
    out, params = tmp_path / "cat.png", str(tmp_path / "params.yaml")
    args = [
        "generate",
        "--model",
        str(tmp_path / "m"),
        "--caption",
        "a cat on a sofa",
        "-n",
        "4",
        "--columns",
        "2",
        "-o",
        str(out),
        "--params",
        params,
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    image = Image.open(out)
    assert image.mode == "RGB" and image.size == (2 * 226 + 2, 2 * 226 + 2)  # 224 tiles, 1x
    tile = np.asarray(image)[2:226, 2:226].astype(int)
    assert (np.abs(tile[..., 0] - tile[..., 1]) > 0).any()  # colour, not grey strips
    result = CliRunner().invoke(app, ["generate", "--model", str(tmp_path / "m"), "--label", "1"])
    assert result.exit_code == 1 and "conditioned on text: give --caption" in result.output


def test_generate_refuses_outputs_that_are_no_image_it_knows(tmp_path):
    save_model(
        tmp_path / "m",
        CVAEMLP.of(input_dim=100, cond_dim=10, hidden_dim=16, latent_dim=4, fusion="concat"),
        "fmnist_label",
        {"dataset": "fmnist"},
    )  # 100 pixels
    result = CliRunner().invoke(app, ["generate", "--label", "bag", "--model", str(tmp_path / "m")])
    assert result.exit_code == 1
    assert "the decoder gives (100,) per image, not an image t2i generate knows" in result.output
    save_model(
        tmp_path / "j", JudgeCNN.of(num_classes=10, feature_dim=128), "judge", {"dataset": "fmnist"}
    )
    result = CliRunner().invoke(app, ["generate", "--label", "bag", "--model", str(tmp_path / "j")])
    assert result.exit_code == 1 and "judge is a classifier, it generates nothing" in result.output
