"""The small setting (params-small.yaml): one overlay that the test suite's end-to-end runs
and the GitHub workflow's small run both apply, with keys that all exist in the schema."""

import subprocess
import sys

import pytest
import yaml
from pydantic import BaseModel

from pipeline.config import Params, parse_params
from pipeline.models.registry import GENERATIVE

from .conftest import (
    REPO,
    SMALL_OVERLAY,
    WORKFLOW,
    apply_overlay,
    tiny_params,
    workflow_small_run,
)

OVERLAY = yaml.safe_load(SMALL_OVERLAY.read_text())
FMNIST_MODELS = sorted(name for name, spec in GENERATIVE.items() if spec.data == "fmnist")


def schema_field(dotted: str):
    """The schema's field for ``train.fmnist_label.epochs``, or None where there is none."""
    model, field = Params, None
    for part in dotted.split("."):
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = field.annotation
    return field


def test_every_overlay_key_exists_in_the_schema():
    keys = apply_overlay.flatten(OVERLAY)
    assert len(keys) > 30
    assert [k for k in keys if schema_field(k) is None] == []
    assert schema_field("judge.no_such_key") is None and schema_field("judge.epochs") is not None
    parse_params(tiny_params())  # and the applied values are valid ones


def test_the_overlay_shrinks_every_fashion_mnist_model_the_judge_and_cas():
    assert set(FMNIST_MODELS) >= {"fmnist_label", "fmnist_text", "fmnist_conv"}
    small, full = (
        parse_params(tiny_params()),
        parse_params(yaml.safe_load((REPO / "params.yaml").read_text())),
    )
    for name in FMNIST_MODELS:
        train = getattr(small.train, name)
        assert (train.epochs, train.train_limit, train.device) == (2, 2048, "cpu"), name
        evaluate = getattr(small.evaluate, name)
        assert (evaluate.test_limit, evaluate.device) == (500, "cpu"), name
        assert getattr(full.train, name).epochs > 2, name  # it is a change
    judge = small.judge
    assert (judge.epochs, judge.train_limit, judge.device) == (1, 2048, "cpu")
    # The tiny judge reaches 0.71 (1 epoch on 2,048 images); its floor leaves a margin, while
    # the full judge keeps 0.92.
    assert (judge.min_accuracy, full.judge.min_accuracy) == (0.6, 0.92)
    cas = small.cas
    assert (cas.epochs, cas.samples_per_class, cas.real_limit, cas.device) == (1, 100, 2048, "cpu")
    assert small.embed.device == "cpu"


def test_the_workflow_applies_the_same_overlay_then_runs_the_pipeline():
    # tests/conftest.py's finished_root_run runs exactly these lines in a repo copy, so the
    # suite runs the workflow's small run.
    assert workflow_small_run() == [
        "python scripts/apply_overlay.py params-small.yaml",
        "dvc repro",
    ]
    assert SMALL_OVERLAY == REPO / "params-small.yaml"
    assert "params.yaml" not in WORKFLOW.read_text().replace("params-small.yaml", "")


def test_applying_sets_the_named_keys_and_keeps_the_rest(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        "train:\n  a: &shared {epochs: 40, lr: 0.1}\n  b: *shared\n"
        "judge: {epochs: 12, keep: [1, 2]}\n"
    )
    overlay = tmp_path / "small.yaml"
    overlay.write_text("train:\n  a: {epochs: 2}\njudge: {keep: [3]}\n")
    run = subprocess.run(
        [sys.executable, REPO / "scripts/apply_overlay.py", overlay, "--params", params],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert yaml.safe_load(params.read_text()) == {
        "train": {"a": {"epochs": 2, "lr": 0.1}, "b": {"epochs": 40, "lr": 0.1}},  # not shared
        "judge": {"epochs": 12, "keep": [3]},
    }
    run = subprocess.run(
        [
            sys.executable,
            REPO / "scripts/apply_overlay.py",
            overlay,
            "--params",
            params,
            "--set-param",
        ],
        capture_output=True,
        text=True,
    )
    assert run.stdout.split() == ["-S", "train.a.epochs=2", "-S", "judge.keep=[3]"]


@pytest.mark.parametrize(
    ("overlay", "message"),
    [
        ("judge: {epoch: 2}", "overlay key judge.epoch: params has no such key"),
        ("jugde: {epochs: 2}", "overlay key jugde.epochs: params has no section jugde"),
        (
            "judge:\n  epochs: {x: 1}",
            "overlay key judge.epochs.x: params has no section judge.epochs",
        ),
    ],
)
def test_an_unknown_overlay_key_stops_with_one_line_naming_it(tmp_path, overlay, message):
    params, path = tmp_path / "params.yaml", tmp_path / "small.yaml"
    params.write_text("judge: {epochs: 12}\n")
    path.write_text(overlay + "\n")
    run = subprocess.run(
        [sys.executable, REPO / "scripts/apply_overlay.py", path, "--params", params],
        capture_output=True,
        text=True,
    )
    assert (run.returncode, run.stderr) == (1, f"error: {message}\n")
    assert params.read_text() == "judge: {epochs: 12}\n"  # untouched
