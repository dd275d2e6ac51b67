"""The small setting (params-small.yaml): one overlay that the test suite's end-to-end runs
and the GitHub workflow's small run both apply, with keys that all exist in the schema; and
scripts/apply_overlay.py itself, run as a subprocess on a copy of the repo's params.yaml:
merged, then checked against the schema, then written atomically, or one error line."""

import os
import resource
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import parse_params
from pipeline.yamlfile import load_yaml

from .conftest import (
    REPO,
    SMALL_OVERLAY,
    WORKFLOW,
    apply_overlay,
    tiny_params,
    workflow_small_run,
)
from .test_yaml_strict import ALIAS_BOMB

OVERLAY = load_yaml(SMALL_OVERLAY)


def validated(params, dotted: str):
    """The value at ``models.fmnist_label.train.epochs`` of a validated Params."""
    node = params
    for part in dotted.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


def test_every_overlay_key_reaches_the_validated_params_with_its_value():
    keys = apply_overlay.flatten(OVERLAY)
    assert len(keys) > 30
    small = parse_params(tiny_params())  # each key exists in params.yaml, the result is valid
    got = {key: validated(small, key) for key in keys}
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in got.items()} == keys


def test_the_overlay_shrinks_every_fashion_mnist_model_the_judge_and_cas():
    small, full = parse_params(tiny_params()), parse_params(load_yaml(REPO / "params.yaml"))
    fmnist = sorted(name for name, entry in full.models.items() if entry.data == "fmnist")
    assert set(fmnist) >= {"fmnist_label", "fmnist_text", "fmnist_conv"}
    for name in fmnist:
        train = small.models[name].train
        assert (train.epochs, train.train_limit, train.device) == (2, 2048, "cpu"), name
        evaluate = small.models[name].evaluate
        assert (evaluate.test_limit, evaluate.device) == (500, "cpu"), name
        assert full.models[name].train.epochs > 2, name  # it is a change
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


SCRIPT = REPO / "scripts/apply_overlay.py"


MEMORY = 1 << 30  # the script needs about a quarter of this; an expanded alias bomb, far more


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def run_script(*args) -> subprocess.CompletedProcess:
    """The script, run as the README runs it, in at most MEMORY bytes of address space."""
    return subprocess.run(
        [sys.executable, SCRIPT, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        preexec_fn=_limit_memory,
    )


def error_line(run: subprocess.CompletedProcess) -> str:
    """The one `error: ` line of a refused run (exit code 1, nothing on stdout)."""
    assert (run.returncode, run.stdout) == (1, ""), run.stderr
    assert run.stderr.startswith("error: ") and run.stderr.count("\n") == 1, run.stderr
    return run.stderr


@pytest.fixture
def params(tmp_path) -> Path:
    """A byte copy of the repo's params.yaml, whatever its shape at test time."""
    path = tmp_path / "params.yaml"
    path.write_bytes((REPO / "params.yaml").read_bytes())
    return path


def loaded(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_applying_sets_the_named_keys_and_keeps_the_rest(tmp_path, params):
    before = loaded(params)
    overlay = tmp_path / "small.yaml"
    overlay.write_text("judge: {epochs: 2, device: cpu}\ncas: {}\nembed: {batch_size: 7}\n")
    run = run_script(overlay, "--params", params)
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"wrote {params}: 3 keys from {overlay}\n"
    before["judge"].update(epochs=2, device="cpu")
    before["embed"]["batch_size"] = 7
    assert loaded(params) == before  # cas: {} changed nothing, every other key is kept
    parse_params(loaded(params))
    run = run_script(overlay, "--params", params, "--set-param")
    assert run.stdout.split() == [
        "-S",
        "judge.epochs=2",
        "-S",
        "judge.device=cpu",
        "-S",
        "embed.batch_size=7",
    ]


def test_an_empty_mapping_keeps_the_section(tmp_path, params):
    before = loaded(params)
    overlay = tmp_path / "small.yaml"
    overlay.write_text("judge: {}\nreport: {max_file_bytes: 1000}\n")
    run = run_script(overlay, "--params", params)
    assert run.returncode == 0, run.stderr
    assert loaded(params)["judge"] == before["judge"] != {}
    assert loaded(params)["report"] == {**before["report"], "max_file_bytes": 1000}
    run = run_script(overlay, "--params", params, "--set-param")
    assert run.stdout.split() == ["-S", "report.max_file_bytes=1000"]


@pytest.mark.parametrize(
    ("overlay", "message"),
    [
        ("judge: 5", "overlay key judge: params has a section here, got 5"),
        ("judge: null", "overlay key judge: params has a section here, got null"),
        ("cas: [1, 2]", "overlay key cas: params has a section here, got [1, 2]"),
        ("generate: lots", "overlay key generate: params has a section here, got lots"),
        ("judge: {epochs: {}}", "overlay key judge.epochs: params has no section judge.epochs"),
        ("judge: {epochs: lots}", "judge.epochs: Input should be a valid integer (got 'lots')"),
        ("judge: {epochs: .nan}", "judge.epochs: Input should be a valid integer (got nan)"),
        ("judge: {lr: .nan}", "judge.lr: Input should be a finite number (got nan)"),
        ("embed: {batch_size: -1}", "embed.batch_size: Input should be greater than or equal"),
    ],
)
def test_a_bad_value_is_refused_before_anything_is_written(tmp_path, params, overlay, message):
    path = tmp_path / "small.yaml"
    path.write_text(overlay + "\n")
    before = params.read_bytes()
    for extra in ([], ["--out", tmp_path / "out.yaml"], ["--set-param"]):
        assert message in error_line(run_script(path, "--params", params, *extra))
    assert params.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml", "small.yaml"]


def test_a_schema_error_names_both_files(tmp_path, params):
    path = tmp_path / "small.yaml"
    path.write_text("judge: {epochs: lots}\n")
    line = error_line(run_script(path, "--params", params))
    assert line.startswith(f"error: {params} + {path}: invalid params: judge.epochs: ")


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
    run = run_script(path, "--params", params)
    assert (run.returncode, run.stderr) == (1, f"error: {message}\n")
    assert params.read_text() == "judge: {epochs: 12}\n"  # untouched


def test_a_missing_out_folder_is_one_line(tmp_path, params):
    overlay, out = tmp_path / "small.yaml", tmp_path / "no" / "such" / "small.yaml"
    overlay.write_text("judge: {epochs: 2}\n")
    line = error_line(run_script(overlay, "--params", params, "--out", out))
    assert line == f"error: {out}: cannot write it (no folder {out.parent})\n"
    assert not (tmp_path / "no").exists()


def test_the_rewritten_file_keeps_its_mode(tmp_path, params):
    overlay = tmp_path / "small.yaml"
    overlay.write_text("judge: {epochs: 2}\n")
    params.chmod(0o644)
    assert run_script(overlay, "--params", params).returncode == 0
    assert stat.S_IMODE(params.stat().st_mode) == 0o644
    assert loaded(params)["judge"]["epochs"] == 2
    assert [p.name for p in tmp_path.glob(".*")] == []  # no temp file left


def test_a_symlinked_params_file_stays_a_link_and_its_target_is_rewritten(tmp_path, params):
    real = tmp_path / "real" / "params.yaml"
    real.parent.mkdir()
    params.rename(real)
    link = tmp_path / "params.yaml"
    link.symlink_to(os.path.relpath(real, link.parent))
    overlay = tmp_path / "small.yaml"
    overlay.write_text("judge: {epochs: 2}\n")
    run = run_script(overlay, "--params", link)
    assert run.returncode == 0, run.stderr
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert loaded(real)["judge"]["epochs"] == 2
    assert sorted(p.name for p in real.parent.iterdir()) == ["params.yaml"]


@pytest.mark.parametrize(
    ("which", "text", "message"),
    [
        ("params", ALIAS_BOMB.encode(), "(line 1, column 4: &a: anchors (&) and aliases (*)"),
        ("overlay", ALIAS_BOMB.encode(), "(line 1, column 4: &a: anchors (&) and aliases (*)"),
        ("overlay", b"judge: &j {epochs: *j}\n", "(line 1, column 8: &j: anchors (&)"),
        ("params", b"judge: {epochs: 2}\nx: &r [*r]\n", "(line 2, column 4: &r: anchors (&)"),
        (
            "overlay",
            b"judge:\n  epochs: 2\n  device: cpu\n  epochs: 3\n",
            "(line 4, column 3: duplicate key judge.epochs (first at line 2; YAML would keep",
        ),
        ("params", b"judge: {epochs: 2}\njudge: {}\n", "duplicate key judge (first at line 1;"),
        ("overlay", b"judge: {device: caf\xe9}\n", "(byte 0xe9 at offset 19 is not UTF-8)"),
        ("overlay", b"judge: {epochs: 2}\n\0", "(NUL byte at offset 19)"),
        ("overlay", b"judge: {epochs: 2\n", "(line 2, column 1: while parsing a flow mapping"),
        ("overlay", b"judge: !!python/name:os.system x\n", "tag 'tag:yaml.org,2002:python/"),
    ],
)
def test_a_hostile_file_is_one_line_naming_it(tmp_path, params, which, text, message):
    assert len(ALIAS_BOMB) < 400
    overlay = tmp_path / "small.yaml"
    overlay.write_text("judge: {epochs: 2}\n")
    path = {"params": params, "overlay": overlay}[which]
    path.write_bytes(text)
    what = {"params": "params file", "overlay": "params overlay"}[which]
    for extra in ([], ["--set-param"]):
        line = error_line(run_script(overlay, "--params", params, *extra))
        assert line.startswith(f"error: {path}: not a readable {what} "), line
        assert message in line
    assert path.read_bytes() == text
