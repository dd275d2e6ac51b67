"""The public Python API (pipeline/api.py) and `t2i generate` as its thin caller, on the small
setting's trained models (the shared finished root run): the same seed gives the same pixels
through both, a negative prompt steers guided samples and w = 0 ignores it, and bad captions,
seeds and option pairs are one line (issues 25 and 27)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline.api import MAX_SEED, load
from pipeline.errors import PipelineError
from stages.cli import app

from .conftest import one_error_line

LABEL, TEXT = "fmnist_label", "fmnist_text"  # trained with cond_null_p 0: no guidance
GUIDED_LABEL, GUIDED_TEXT = "fmnist_conv", "fmnist_text_prior"  # cond_null_p 0.1


def small_run(finished_root_run) -> SimpleNamespace:
    """The small run's repository, its params.yaml and its model folders (read only)."""
    repo = finished_root_run.repo
    return SimpleNamespace(repo=repo, params=repo / "params.yaml", models=repo / "models")


@pytest.fixture(scope="module")
def trained(finished_root_run) -> SimpleNamespace:
    return small_run(finished_root_run)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def tiles(grid_png, count: int, size: int, columns: int = 8) -> list[np.ndarray]:
    """The first ``count`` tiles of a grid `t2i generate` wrote (2 px gaps, tiles scaled up
    to at least 64 px by repeating pixels), back at ``size`` x ``size``, grey channel."""
    scale = max(1, 64 // size)
    array = np.asarray(Image.open(grid_png).convert("RGB"))[..., 0]
    step = size * scale + 2
    out = []
    for i in range(count):
        top, left = 2 + (i // columns) * step, 2 + (i % columns) * step
        out.append(array[top : top + size * scale : scale, left : left + size * scale : scale])
    return out


def generate(*args: str):
    return CliRunner().invoke(app, ["generate", *args])


def test_the_api_draws_n_images_per_prompt_in_prompt_order(trained):
    m = load(trained.models / TEXT, trained.params)
    assert (m.kind, m.can_guide, m.image_size, m.labels) == ("text", False, (28, 28), None)
    images = m.generate(["white running shoes", "a long summer dress"], n=3, seed=0)
    assert len(images) == 6 and all(i.size == (28, 28) and i.mode == "L" for i in images)
    alone = m.generate("a long summer dress", n=3, seed=0)  # one caption, the same draws
    for a, b in zip(images[3:], alone, strict=True):
        np.testing.assert_array_equal(pixels(a), pixels(b))
    assert not np.array_equal(pixels(images[0]), pixels(images[3]))  # the caption matters
    labels = load(trained.models / LABEL, trained.params)
    assert labels.kind == "label" and "Sneaker" in labels.labels


def test_the_same_seed_gives_the_same_pixels_through_the_api_and_the_cli(trained, tmp_path):
    m = load(trained.models / GUIDED_TEXT, trained.params)
    sampling = {"guidance": 1.5, "temperature": 0.8, "seed": 12345}
    expected = m.generate(["white running shoes"], n=4, **sampling)
    assert pixels(expected[0]).std() > 0  # a drawn image, not a blank one
    out = tmp_path / "shoes.png"
    args = ["--model", str(trained.models / GUIDED_TEXT), "--caption", "white running shoes"]
    args += ["-n", "4", "--guidance", "1.5", "--temperature", "0.8", "--seed", "12345"]
    result = generate(*args, "-o", str(out), "--params", str(trained.params))
    assert result.exit_code == 0, result.output
    for got, want in zip(tiles(out, 4, 28), expected, strict=True):
        np.testing.assert_array_equal(got, pixels(want))
    other = m.generate(["white running shoes"], n=4, **{**sampling, "seed": 12346})
    assert not np.array_equal(pixels(other[0]), pixels(expected[0]))


@pytest.mark.parametrize(
    ("name", "negative"), [(GUIDED_TEXT, "a pair of trousers"), (GUIDED_LABEL, "trouser")]
)
def test_a_negative_prompt_changes_guided_samples_and_w0_ignores_it(trained, name, negative):
    m = load(trained.models / name, trained.params)
    prompt = "sneaker" if m.kind == "label" else "white running shoes"
    guided = {"guidance": 2.0, "seed": 7, "n": 4}
    plain = m.generate([prompt], **guided)
    away = m.generate([prompt], negative=negative, **guided)
    assert any(not np.array_equal(pixels(a), pixels(b)) for a, b in zip(plain, away, strict=True))
    unguided = m.generate([prompt], n=4, seed=7, guidance=0.0)
    ignored = m.generate([prompt], n=4, seed=7, guidance=0.0, negative=negative)
    for a, b in zip(unguided, ignored, strict=True):
        np.testing.assert_array_equal(pixels(a), pixels(b))


def test_the_null_condition_as_negative_is_plain_guidance(trained):
    """The negative slot is the null condition's: a zero vector there gives exactly the
    guided samples of pipeline/models/guidance.py."""
    import torch

    from pipeline.api import Condition

    m = load(trained.models / GUIDED_LABEL, trained.params)
    null = Condition("null", torch.zeros(1, m.module.config.cond_dim))
    plain = m.generate(["bag"], n=3, guidance=1.0, seed=3)
    same = m.generate(["bag"], n=3, guidance=1.0, seed=3, negative=null)
    for a, b in zip(plain, same, strict=True):
        np.testing.assert_array_equal(pixels(a), pixels(b))


def test_guidance_on_a_model_without_a_null_condition_is_refused(trained, tmp_path):
    m = load(trained.models / LABEL, trained.params)
    with pytest.raises(
        PipelineError, match=r"cond_null_p 0\): it cannot be guided; use guidance 0"
    ):
        m.generate(["bag"], guidance=1.0)
    out = tmp_path / "x.png"
    args = ["--model", str(trained.models / LABEL), "--label", "bag", "--guidance", "2"]
    line = one_error_line(generate(*args, "-o", str(out), "--params", str(trained.params)))
    assert line.endswith(
        "trained without a null condition (cond_null_p 0): it cannot be guided; use guidance 0"
    )
    assert not out.exists()


BAD_CAPTIONS = [
    ("", "caption '' is empty"),
    ("   \t ", "is empty"),
    ("\u200b\u200b", "has no visible character"),
    ("\u200d\ufeff\u2060", "has no visible character"),
    ("x" * 10_000, "caption of 10,000 characters, more than 2,000; shorten it"),
]


@pytest.mark.parametrize(("caption", "why"), BAD_CAPTIONS)
def test_empty_invisible_or_overlong_captions_are_one_line(trained, tmp_path, caption, why):
    m = load(trained.models / TEXT, trained.params)
    with pytest.raises(PipelineError, match="prompt: "):
        m.generate(caption)
    out = tmp_path / "x.png"
    args = ["--model", str(trained.models / TEXT), "--caption", caption, "-o", str(out)]
    line = one_error_line(generate(*args, "--params", str(trained.params)))
    assert line.startswith("error: --caption: ") and why in line
    assert not out.exists()


CLI_CASES = [
    (
        TEXT,
        ["--caption", "a red dress", "--label", "dress"],
        "conflicting options --caption and --label",
    ),
    (
        LABEL,
        ["--caption", "a red dress", "--label", "dress"],
        "conflicting options --caption and --label",
    ),
    (TEXT, ["--label", "dress"], "is conditioned on text: give --caption, not --label"),
    (LABEL, ["--caption", "a red dress"], "is conditioned on labels: give --label, not --caption"),
    (
        TEXT,
        ["--caption", "a dress", "--seed", "99999999999999999999999"],
        "seed 99999999999999999999999: expected a whole number from 0 to 2**63 - 1",
    ),
    (TEXT, ["--caption", "a dress", "--seed", "-1"], "seed -1: expected a whole number"),
    (
        TEXT,
        ["--caption", "a dress", "--guidance", "1e9"],
        "guidance 1e+09: expected w from 0 to 20",
    ),
    (TEXT, ["--caption", "a dress", "--guidance", "nan"], "guidance nan: expected w from 0 to 20"),
    (
        TEXT,
        ["--caption", "a dress", "--temperature", "0"],
        "temperature 0.0: expected T from 0.01 to 10",
    ),
    (
        TEXT,
        ["--caption", "a dress", "-n", "0"],
        "-n 0: expected a whole number of images, at least 1",
    ),
    (
        GUIDED_TEXT,
        ["--caption", "a dress", "--negative", "trousers"],
        "--negative needs --guidance > 0: at w = 0 it changes nothing",
    ),
    (
        GUIDED_LABEL,
        ["--label", "dress", "--negative-label", "coat"],
        "--negative-label needs --guidance > 0",
    ),
    (
        GUIDED_LABEL,
        ["--label", "dress", "--negative", "a coat", "--guidance", "1"],
        "is conditioned on labels: give --negative-label, not --negative",
    ),
    (
        GUIDED_TEXT,
        ["--caption", "a dress", "--negative-label", "coat", "--guidance", "1"],
        "is conditioned on text: give --negative, not --negative-label",
    ),
    (
        GUIDED_TEXT,
        ["--caption", "a dress", "--negative", "\u200b", "--guidance", "1"],
        "--negative: caption '\\u200b' has no visible character",
    ),
]


@pytest.mark.parametrize(("model", "args", "expected"), CLI_CASES)
def test_bad_generate_options_are_one_line_and_write_nothing(
    trained, tmp_path, model, args, expected
):
    out = tmp_path / "x.png"
    result = generate(
        "--model",
        str(trained.models / model),
        *args,
        "-o",
        str(out),
        "--params",
        str(trained.params),
    )
    assert expected in one_error_line(result)
    assert not out.exists()


def test_the_seed_bound_is_inclusive(trained):
    m = load(trained.models / LABEL, trained.params)
    assert len(m.generate("bag", seed=MAX_SEED)) == 1
    with pytest.raises(PipelineError, match="seed"):
        m.generate("bag", seed=MAX_SEED + 1)
    with pytest.raises(PipelineError, match="seed"):
        m.generate("bag", seed=True)


def test_a_wrong_kind_of_prompt_is_one_line(trained):
    m = load(trained.models / LABEL, trained.params)
    with pytest.raises(PipelineError, match="unknown Fashion-MNIST label 'white running shoes'"):
        m.generate(["white running shoes"])
    with pytest.raises(PipelineError, match="prompt 2: expected text, got int"):
        m.generate(["bag", 3])
    with pytest.raises(PipelineError, match="a caption or label, or a non-empty list"):
        m.generate([])


# ---------------------------------------------------------------------------- sampler expost
# The small run's label models are trained with an `expost` section: their density.safetensors
# (per class a Gaussian mixture over the training images' posterior means) lies beside the
# weights and config.json records its sha256.


def model_copy(trained, name: str, dest) -> object:
    """The files of models/<name> (config.json, the weights and the density when there is
    one) in ``dest``: a folder a test may change."""
    dest.mkdir(parents=True)
    for path in (trained.models / name).iterdir():
        if path.is_file():
            (dest / path.name).write_bytes(path.read_bytes())
    return dest


def differs(first: list, second: list) -> bool:
    """Whether two equally long lists of images differ in any pixel."""
    return any(not np.array_equal(pixels(a), pixels(b)) for a, b in zip(first, second, strict=True))


def test_expost_is_deterministic_per_seed_per_prompt_and_is_not_the_prior(trained):
    import torch

    from pipeline.evaluate import sample_images
    from pipeline.figures import to_pixels

    m = load(trained.models / LABEL, trained.params)
    assert m.samplers == ("prior", "expost") and "sampler prior or expost" in m.describe()
    drawn = m.generate(["sneaker", "bag"], n=4, seed=5, sampler="expost")
    again = m.generate(["sneaker", "bag"], n=4, seed=5, sampler="expost")
    assert len(drawn) == 8 and pixels(drawn[0]).std() > 0
    for a, b in zip(drawn, again, strict=True):
        np.testing.assert_array_equal(pixels(a), pixels(b))
    alone = m.generate("bag", n=4, seed=5, sampler="expost")  # its own draws, whatever beside
    for a, b in zip(drawn[4:], alone, strict=True):
        np.testing.assert_array_equal(pixels(a), pixels(b))
    prior = m.generate(["sneaker", "bag"], n=4, seed=5)
    assert all(not np.array_equal(pixels(a), pixels(b)) for a, b in zip(drawn, prior, strict=True))
    other = m.generate(["sneaker"], n=4, seed=6, sampler="expost")
    assert not np.array_equal(pixels(other[0]), pixels(drawn[0]))
    # the evaluations' expost sampling of n rows of the prompt's condition, seeded alike
    density = m.density()
    assert m.density() is density  # read once
    c = m.condition("bag").vector.expand(4, -1)
    images = sample_images(m.module, c, torch.Generator().manual_seed(5), 1.0, 0.0, density)
    for got, want in zip(alone, to_pixels(images.reshape(4, 28, 28).numpy()), strict=True):
        np.testing.assert_array_equal(pixels(got), want)


def test_expost_with_guidance_and_a_negative_label(trained):
    import torch

    from pipeline.api import Condition

    m = load(trained.models / GUIDED_LABEL, trained.params)
    assert m.samplers == ("prior", "expost")
    at = {"n": 4, "seed": 7, "temperature": 0.8, "sampler": "expost"}
    plain = m.generate(["sneaker"], guidance=0.0, **at)
    guided = m.generate(["sneaker"], guidance=2.0, **at)
    away = m.generate(["sneaker"], guidance=2.0, negative="sandal", **at)
    null = Condition("null", torch.zeros(1, m.module.config.cond_dim))
    same = m.generate(["sneaker"], guidance=2.0, negative=null, **at)  # plain guidance
    ignored = m.generate(["sneaker"], guidance=0.0, negative="sandal", **at)
    assert differs(plain, guided) and differs(guided, away)
    for a, b in zip(guided, same, strict=True):
        np.testing.assert_array_equal(pixels(a), pixels(b))
    for a, b in zip(plain, ignored, strict=True):
        np.testing.assert_array_equal(pixels(a), pixels(b))


def test_the_api_and_the_cli_give_the_same_expost_pixels(trained, tmp_path):
    m = load(trained.models / GUIDED_LABEL, trained.params)
    sampling = {"guidance": 1.5, "temperature": 0.8, "seed": 12345, "sampler": "expost"}
    expected = m.generate(["ankle boot"], n=4, **sampling)
    out = tmp_path / "boots.png"
    args = ["--model", str(trained.models / GUIDED_LABEL), "--label", "ankle boot", "-n", "4"]
    args += ["--guidance", "1.5", "--temperature", "0.8", "--seed", "12345"]
    result = generate(*args, "--sampler", "expost", "-o", str(out), "--params", str(trained.params))
    assert result.exit_code == 0, result.output
    for got, want in zip(tiles(out, 4, 28), expected, strict=True):
        np.testing.assert_array_equal(got, pixels(want))
    prior = tmp_path / "prior.png"  # the default sampler is the prior
    result = generate(*args, "-o", str(prior), "--params", str(trained.params))
    assert result.exit_code == 0, result.output
    want = m.generate(["ankle boot"], n=4, **{**sampling, "sampler": "prior"})
    for got, image in zip(tiles(prior, 4, 28), want, strict=True):
        np.testing.assert_array_equal(got, pixels(image))


def test_expost_on_a_text_model_is_one_line(trained, tmp_path):
    m = load(trained.models / TEXT, trained.params)
    assert m.samplers == ("prior",) and "sampler prior only" in m.describe()
    expected = (
        f"{trained.models / TEXT}: a text model; sampler expost draws z from a per-class "
        "ex-post density, which only a label model can have; use sampler prior"
    )
    with pytest.raises(PipelineError) as caught:
        m.generate("white running shoes", sampler="expost")
    assert str(caught.value) == expected
    out = tmp_path / "x.png"
    args = ["--model", str(trained.models / TEXT), "--caption", "a coat", "--sampler", "expost"]
    line = one_error_line(generate(*args, "-o", str(out), "--params", str(trained.params)))
    assert line == f"error: {expected}"
    assert not out.exists()


def test_an_unknown_sampler_is_one_line(trained, tmp_path):
    m = load(trained.models / LABEL, trained.params)
    for bad in ("posterior", "Expost", "", None, 1):
        with pytest.raises(PipelineError, match=r"^sampler .*: expected one of prior, expost$"):
            m.generate("bag", sampler=bad)
    out = tmp_path / "x.png"
    args = ["--model", str(trained.models / LABEL), "--label", "bag", "--sampler", "posterior"]
    line = one_error_line(generate(*args, "-o", str(out), "--params", str(trained.params)))
    assert line == "error: sampler 'posterior': expected one of prior, expost"
    assert not out.exists()


def test_a_tampered_density_is_one_line_naming_the_file(trained, tmp_path):
    folder = model_copy(trained, LABEL, tmp_path / "model")
    density = folder / "density.safetensors"
    data = bytearray(density.read_bytes())
    data[-5] ^= 0x01  # one byte of the last tensor's values
    density.write_bytes(bytes(data))
    m = load(folder, trained.params)  # the weights are fine: the prior still draws
    assert len(m.generate("bag", n=2, seed=1)) == 2
    with pytest.raises(PipelineError) as caught:
        m.generate("bag", n=2, seed=1, sampler="expost")
    message = str(caught.value)
    assert message.startswith(f"{density}: sha256 ") and "\n" not in message
    assert message.endswith("the file changed since it was saved")
    out = tmp_path / "x.png"
    args = ["--model", str(folder), "--label", "bag", "--sampler", "expost", "-o", str(out)]
    line = one_error_line(generate(*args, "--params", str(trained.params)))
    assert line == f"error: {message}"
    assert not out.exists()


def test_a_label_model_without_a_density_says_what_to_do(trained, tmp_path):
    import json

    folder = model_copy(trained, LABEL, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    for key in ("density_components", "density_sha256"):
        del config[key]
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "density.safetensors").unlink()
    m = load(folder, trained.params)
    assert m.samplers == ("prior",)
    with pytest.raises(PipelineError) as caught:
        m.generate("bag", sampler="expost")
    assert str(caught.value).startswith(f"{folder / 'config.json'}: no ex-post density")
    assert "use sampler prior" in str(caught.value)
