import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from pipeline.checkpoint import save_model
from pipeline.config import load_params
from pipeline.data.fmnist import LABELS
from pipeline.models.cvae_clip import CVAEClip
from pipeline.models.cvae_gated import CVAEGated
from pipeline.models.cvae_mlp import CVAEMLP
from pipeline.models.judge import JudgeCNN
from pipeline.models.registry import FMNIST_SHAPE
from stages.cli import HELP, app
from stages.commands import stage_module

from .conftest import REPO, params_with
from .encoder_fixtures import make_tiny_clip, make_tiny_t5, trained_on

PARAMS = REPO / "params.yaml"


def meta(name: str, class_key: str, conditioning: str | None, **more) -> dict:
    """config.json's description of a model as its stage saves it: a Fashion-MNIST model of
    params entry ``name`` unless ``more`` says otherwise (data, image_shape, encoder keys)."""
    saved = {"name": name, "class": class_key, "data": "fmnist", "image_shape": FMNIST_SHAPE}
    saved |= {"conditioning": conditioning, "cond_null_p": 0.0}
    if conditioning == "label" or conditioning is None:
        saved["labels"] = LABELS
    return saved | more


def encoder_keys(encoder: str, params, dataset: str = "fmnist") -> dict:
    """The encoder identity a text model's config.json records (its weights id and sha256)."""
    identity = trained_on(encoder, params, dataset)
    return {key: identity[key] for key in ("encoder_weights", "encoder_sha256")}


def test_help_explains_the_pipeline():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "dvc repro" in result.output and "train" in result.output


def test_help_lists_every_command_and_every_model():
    for command in app.registered_commands:
        assert f"  {command.callback.__name__} " in HELP, command.callback.__name__
    # the models are params.yaml's entries: `t2i models` lists each, and each has a train
    # and an evaluate stage module that imports
    result = CliRunner().invoke(app, ["models", "--params", str(PARAMS)])
    assert result.exit_code == 0, result.output
    names = list(load_params(PARAMS).models)
    assert names and [line.split()[0] for line in result.output.splitlines()] == names
    for model in names:
        for command in ("train", "evaluate"):
            module = stage_module(command, model, PARAMS)
            assert (REPO / (module.replace(".", "/") + ".py")).is_file(), (model, module)


def test_generate_writes_a_grid_for_a_label(tmp_path):
    torch.manual_seed(0)
    save_model(
        tmp_path / "m",
        CVAEMLP.of(input_dim=784, cond_dim=10, hidden_dim=16, latent_dim=4, fusion="concat"),
        meta("fmnist_label", "cvae_mlp", "label"),
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
        meta("fmnist_label", "cvae_mlp", "label"),
    )
    result = CliRunner().invoke(app, ["generate", "--label", "hat", "--model", str(tmp_path / "m")])
    assert result.exit_code == 1
    assert "unknown Fashion-MNIST label 'hat'" in result.output


def test_unknown_model_is_a_clear_error():
    result = CliRunner().invoke(app, ["train", "nope", "--params", str(PARAMS)])
    assert result.exit_code == 1 and "unknown model 'nope'" in result.output


def test_generate_from_a_caption_with_a_text_model(tmp_path):
    torch.manual_seed(0)
    save_model(
        tmp_path / "m",
        CVAEMLP.of(input_dim=784, cond_dim=384, hidden_dim=16, latent_dim=4, fusion="concat"),
        meta("fmnist_text", "cvae_mlp", "minilm", **encoder_keys("minilm", PARAMS)),
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
        str(PARAMS),
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
    # The encoder it was trained on: a tiny one (16-d), loaded as the real ones are; the
    # params file is the repository's with that encoder's section pointing at it.
    make = make_tiny_clip if encoder == "clip-vit-b-32" else make_tiny_t5
    weights = make(tmp_path / "w")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_with(f"embed.{encoder}", weights)))
    keys = encoder_keys(encoder, tmp_path / "params.yaml", "coco")
    class_key = load_params(PARAMS).model(name).class_name
    saved = meta(name, class_key, encoder, data="coco", image_shape=(3, 224, 224), **keys)
    save_model(tmp_path / "m", model, saved)
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
    args = ["generate", "--model", str(tmp_path / "m"), "--label", "1", "--params", params]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "conditioned on text: give --caption" in result.output


def test_generate_refuses_outputs_that_are_no_image_it_knows(tmp_path):
    save_model(
        tmp_path / "m",
        CVAEMLP.of(input_dim=100, cond_dim=10, hidden_dim=16, latent_dim=4, fusion="concat"),
        meta("fmnist_label", "cvae_mlp", "label"),
    )  # 100 pixels
    result = CliRunner().invoke(app, ["generate", "--label", "bag", "--model", str(tmp_path / "m")])
    assert result.exit_code == 1
    assert "the decoder gives (100,) per image, not an image t2i generate knows" in result.output
    judge = JudgeCNN.of(num_classes=10, feature_dim=128)
    save_model(tmp_path / "j", judge, meta("judge", "judge", None))
    result = CliRunner().invoke(app, ["generate", "--label", "bag", "--model", str(tmp_path / "j")])
    assert result.exit_code == 1 and "judge is a classifier, it generates nothing" in result.output
