"""`t2i export MODEL DIR` (issue 27): a self-contained model folder with a model card that
huggingface_hub parses, which `load` and `t2i generate --model` use anywhere; hostile targets
(inside models/, an existing folder without --force, a folder no export wrote, a symlinked
safetensors or density) are one line and write nothing; a label model's ex-post density
travels with it, so sampler expost works from the folder alone. On the small setting's
trained models."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from huggingface_hub import ModelCard
from PIL import Image
from typer.testing import CliRunner

from pipeline.api import load
from stages.cli import app

from .conftest import one_error_line
from .test_api import GUIDED_LABEL, GUIDED_TEXT, LABEL, TEXT, small_run, tiles


@pytest.fixture(scope="module")
def trained(finished_root_run):
    return small_run(finished_root_run)


def export(trained, model: str, dest, *extra):
    args = ["export", str(trained.models / model), str(dest), "--params", str(trained.params)]
    return CliRunner().invoke(app, [*args, *extra])


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """fmnist_text_prior exported once, outside the repository."""
    dest = tmp_path_factory.mktemp("export") / "t2i-fmnist-text-prior"
    result = export(trained, GUIDED_TEXT, dest)
    assert result.exit_code == 0, result.output
    return dest


def test_the_card_parses_with_its_metadata_and_results(exported, trained):
    assert sorted(p.name for p in exported.iterdir()) == [
        "README.md",
        "config.json",
        "encoder.json",
        "model.safetensors",
        "sample.png",
    ]
    card = ModelCard.load(exported / "README.md")
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "text-to-image" and data["library_name"] == "t2i-cvae"
    assert data["license"] == "other" and data["datasets"] == ["fashion_mnist"]
    assert {"text-to-image", "cvae", "minilm"} <= set(data["tags"])
    results = data["model-index"][0]["results"]
    metrics = [m for r in results for m in r["metrics"]]
    evaluation = json.loads((trained.repo / "metrics" / GUIDED_TEXT / "eval.json").read_text())
    heldout = evaluation["judge_accuracy_heldout_phrasings"]["overall"]
    accuracy = next(m for m in metrics if m["name"].startswith("judge accuracy on samples"))
    assert accuracy["value"] == pytest.approx(heldout["mean"])
    assert accuracy["args"] == {"std": pytest.approx(heldout["std"])}
    assert any(m["type"] == "cas" for m in metrics)
    assert any(m["name"].startswith("frontier, ") for m in metrics)
    assert "## Limitations" in card.text and "huggingface-cli upload" in card.text
    assert "± " in card.text  # the spreads over sample seeds
    config = json.loads((exported / "config.json").read_text())
    assert config["conditioning"] == "minilm" and len(config["encoder_sha256"]) == 64
    sample = Image.open(exported / "sample.png")
    assert sample.width > 8 * 56 and np.asarray(sample).std() > 0


def test_an_exported_folder_loads_and_generates_anywhere(exported, trained, tmp_path, monkeypatch):
    """The API and `t2i generate` in a folder with no params.yaml and no models/, from the
    exported files alone; the pixels are the original's."""
    m = load(exported)  # the encoder from the folder (encoder.json), not params.yaml
    original = load(trained.models / GUIDED_TEXT, trained.params)
    want = original.generate(["white running shoes"], n=2, guidance=1.0, seed=9)
    got = m.generate(["white running shoes"], n=2, guidance=1.0, seed=9)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    elsewhere = tmp_path / "elsewhere"  # no params.yaml, no models/: the folder alone
    shutil.copytree(exported, elsewhere / "model")
    monkeypatch.chdir(elsewhere)
    args = ["generate", "--model", "model", "--caption", "white running shoes", "-n", "2"]
    result = CliRunner().invoke(app, [*args, "--guidance", "1", "--seed", "9", "-o", "out.png"])
    assert result.exit_code == 0, result.output
    for a, b in zip(tiles(elsewhere / "out.png", 2, 28), want, strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_a_label_model_exports_with_every_class_in_its_sample(trained, tmp_path):
    result = export(trained, LABEL, tmp_path / "label")
    assert result.exit_code == 0, result.output
    card = ModelCard.load(tmp_path / "label" / "README.md")
    assert "cannot be guided" in card.text
    assert not (tmp_path / "label" / "encoder.json").exists()
    assert Image.open(tmp_path / "label" / "sample.png").height == 10 * 58 + 2  # a row a class


def test_an_export_into_a_dvc_output_folder_is_refused(trained):
    for target in ("models/shared", "models", "metrics/x", "data/out"):
        dest = trained.repo / target
        line = one_error_line(export(trained, TEXT, dest))
        top = target.split("/")[0]
        expected = f"inside {top}/, a DVC output folder; export outside the pipeline's outputs"
        assert line == f"error: {dest}: {expected}"
    assert not (trained.repo / "models" / "shared").exists()
    assert not (trained.repo / "metrics" / "x").exists()


def test_an_existing_folder_is_replaced_only_with_force_and_only_an_exported_one(trained, tmp_path):
    dest = tmp_path / "out"
    assert export(trained, LABEL, dest).exit_code == 0
    before = (dest / "config.json").read_bytes()
    line = one_error_line(export(trained, TEXT, dest))
    assert line == f"error: {dest}: exists; give --force to replace it"
    assert (dest / "config.json").read_bytes() == before
    result = export(trained, TEXT, dest, "--force")
    assert result.exit_code == 0, result.output
    assert json.loads((dest / "config.json").read_text())["name"] == TEXT
    (dest / "notes.txt").write_text("mine")
    line = one_error_line(export(trained, LABEL, dest, "--force"))
    assert line == f"error: {dest}: holds 'notes.txt', which no export wrote; kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp folder left


def test_a_symlinked_safetensors_is_refused(trained, tmp_path):
    model = tmp_path / "models" / LABEL
    model.mkdir(parents=True)
    shutil.copy(trained.models / LABEL / "config.json", model)
    (model / "model.safetensors").symlink_to(trained.models / LABEL / "model.safetensors")
    args = ["export", str(model), str(tmp_path / "out"), "--params", str(trained.params)]
    line = one_error_line(CliRunner().invoke(app, args))
    expected = "is a symlink; export copies a model folder's own files"
    assert line == f"error: {model / 'model.safetensors'}: {expected}"
    assert not (tmp_path / "out").exists()


def test_an_export_over_the_model_or_the_working_directory_is_refused(
    trained, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    line = one_error_line(export(trained, LABEL, tmp_path, "--force"))
    assert (
        line == f"error: {tmp_path}: holds the working directory; export into a folder of its own"
    )
    assert sorted(tmp_path.iterdir()) == []


def test_strings_enter_the_card_escaped():
    """A summary, model name or label from a file cannot add a link, an image, HTML, a table
    cell or a line to the published card."""
    from pipeline.model_card import md

    text = md("[click](http://x) ![i](y) <img src=x onerror=alert(1)> a|b\n# title `c` *d*")
    assert "\n" not in text and "](" not in text.replace("\\]", "")
    for special in "[]<>|`*#!":
        assert text.count(special) == text.count("\\" + special), special


def test_a_label_model_exports_with_its_density_and_draws_expost_anywhere(
    trained, tmp_path, monkeypatch
):
    """The density travels with the folder (the same bytes, config.json's sha256), the card
    states both samplers, and the folder alone draws the original's expost pixels through
    the API and `t2i generate --sampler expost`."""
    dest = tmp_path / "label"
    result = export(trained, GUIDED_LABEL, dest)
    assert result.exit_code == 0, result.output
    density = (trained.models / GUIDED_LABEL / "density.safetensors").read_bytes()
    assert (dest / "density.safetensors").read_bytes() == density
    config = json.loads((dest / "config.json").read_text())
    assert config["density_sha256"] == hashlib.sha256(density).hexdigest()
    card = ModelCard.load(dest / "README.md")
    assert "Samplers: `prior`" in card.text and "--sampler expost" in card.text
    sampling = {"n": 3, "guidance": 1.0, "temperature": 0.8, "seed": 4, "sampler": "expost"}
    want = load(trained.models / GUIDED_LABEL, trained.params).generate(["sandal"], **sampling)
    elsewhere = tmp_path / "elsewhere"  # no params.yaml, no models/: the folder alone
    shutil.copytree(dest, elsewhere / "model")
    monkeypatch.chdir(elsewhere)
    m = load("model")
    assert m.samplers == ("prior", "expost")
    for a, b in zip(m.generate(["sandal"], **sampling), want, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    args = ["generate", "--model", "model", "--label", "sandal", "-n", "3", "--seed", "4"]
    args += ["--guidance", "1", "--temperature", "0.8", "--sampler", "expost", "-o", "out.png"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for a, b in zip(tiles(elsewhere / "out.png", 3, 28), want, strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_a_text_model_card_states_its_one_sampler(exported):
    card = ModelCard.load(exported / "README.md")
    assert "Sampler: `prior` only" in card.text
    assert not (exported / "density.safetensors").exists()


def test_the_card_reports_cas_at_the_chosen_point_with_its_sampler(exported, trained):
    cas = json.loads((trained.repo / "metrics" / "cas" / f"{GUIDED_TEXT}.json").read_text())
    at = cas["conditions"]
    point = f"{at['sampler']}, w {at['guidance']:g}, T {at['temperature']:g}"
    data = ModelCard.load(exported / "README.md").data.to_dict()
    metrics = [m for r in data["model-index"][0]["results"] for m in r["metrics"]]
    chosen = [m for m in metrics if m["name"].startswith("CAS at the chosen point")]
    assert len(chosen) == 1 and chosen[0]["name"] == f"CAS at the chosen point, {point}"
    assert chosen[0]["value"] == pytest.approx(cas["accuracy_on_real_test"])
    evaluation = json.loads((trained.repo / "metrics" / GUIDED_TEXT / "eval.json").read_text())
    chosen_eval = evaluation["guidance"]
    accuracy = next(m for m in metrics if m["name"].startswith("judge accuracy on samples"))
    assert accuracy["name"].endswith(
        f"{chosen_eval['sampler']}, w {chosen_eval['w']:g}, T {chosen_eval['temperature']:g}"
    )


def test_a_symlinked_or_tampered_density_is_refused(trained, tmp_path):
    model = tmp_path / "models" / LABEL
    model.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(trained.models / LABEL / name, model)
    (model / "density.safetensors").symlink_to(trained.models / LABEL / "density.safetensors")
    args = ["export", str(model), str(tmp_path / "out"), "--params", str(trained.params)]
    line = one_error_line(CliRunner().invoke(app, args))
    expected = "is a symlink; export copies a model folder's own files"
    assert line == f"error: {model / 'density.safetensors'}: {expected}"
    (model / "density.safetensors").unlink()
    data = bytearray((trained.models / LABEL / "density.safetensors").read_bytes())
    data[-5] ^= 0x01  # one byte changed
    (model / "density.safetensors").write_bytes(bytes(data))
    line = one_error_line(CliRunner().invoke(app, args))
    assert line.startswith(f"error: {model / 'density.safetensors'}: sha256 ")
    assert line.endswith("the file changed since it was saved")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]  # no export, no temp folder
