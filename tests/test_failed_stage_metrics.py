"""No metric from a failed stage (issue 21, cases 3 and 6), through the real stage commands and
`dvc repro` on a copy of the finished tiny root run: a refused judge, a training run that
fails, CAS and evaluation of a model whose weights hold NaN, and evaluate stages whose
figures fail after their numbers.

The rule of the training stages (pipeline/train.py): a stage clears the dvclive summary it
replaces when it starts, its curves grow in a partial folder, and it publishes them
(publish_live) only after the model is saved. So a failed run leaves no
metrics/<name>/train/metrics.json, not even the previous run's: the stage commands are run
directly too, where DVC removes no output before them."""

import subprocess
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from pipeline.train import partial_live_dir

from .conftest import copy_repo, run_env, set_param

pytestmark = pytest.mark.e2e


def run(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=repo, env=run_env(repo), capture_output=True, text=True)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The one `error: ` line a failed stage printed; no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, output
    return lines[0]


@pytest.fixture
def repo(finished_root_run, tmp_path) -> Path:
    return copy_repo(finished_root_run.repo, tmp_path)


def assert_no_summary(live: Path) -> None:
    """No dvclive summary in ``live``: nothing `dvc metrics` would read as this run's."""
    assert not (live / "metrics.json").exists(), live


@pytest.mark.parametrize("command", [("dvc", "repro", "-s", "judge"), ("t2i", "judge")])
def test_a_judge_refused_by_min_accuracy_leaves_no_metric(repo, command):
    live = repo / "metrics/judge/train"
    assert (live / "metrics.json").is_file()  # the finished run's
    weights = repo / "models/judge/model.safetensors"
    before = weights.read_bytes()
    set_param(repo, "judge", "min_accuracy", 0.999)
    line = one_error_line(run(repo, *command))
    assert line.startswith("error: judge: test accuracy ") and "below judge.min_accuracy" in line
    assert_no_summary(live)  # `dvc metrics diff` shows no judge that does not exist
    if command[0] == "dvc":  # DVC removed the outputs before the stage ran
        assert not weights.exists()
    else:  # the stage itself wrote no model, and cleared the summary it was to replace
        assert weights.read_bytes() == before


@pytest.mark.parametrize("command", [("dvc", "repro", "-s"), ("t2i", "train")])
def test_a_failed_training_run_leaves_no_metric(repo, command):
    """lr 1.0 makes every step non-finite: the stage stops after epoch 1 with one line, saves
    no model and publishes no summary (the finished run's is cleared at the start)."""
    live = repo / "metrics/fmnist_label/train"
    assert (live / "metrics.json").is_file()  # the finished run's
    weights = repo / "models/fmnist_label/model.safetensors"
    before = weights.read_bytes()
    set_param(repo, "models.fmnist_label.train", "lr", 1.0)
    stage = "train@fmnist_label" if command[0] == "dvc" else "fmnist_label"
    line = one_error_line(run(repo, *command, stage))
    assert line.startswith("error: train fmnist_label: stopped after epoch 1: "), line
    assert_no_summary(live)
    assert not partial_live_dir(live).exists()  # fit removes the curves of a failed run
    if command[0] == "dvc":
        assert not weights.exists()
    else:
        assert weights.read_bytes() == before  # no model written


def poison(weights: Path) -> None:
    """Every float weight NaN: a model that diverged, still a readable file."""
    tensors = load_file(str(weights))
    save_file(
        {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in tensors.items()},
        str(weights),
    )


def test_cas_and_evaluate_of_a_nan_model_fail_with_one_line_and_record_no_metric(repo):
    live = repo / "metrics/cas/fmnist_label/train"
    assert (live / "metrics.json").is_file()  # the last good run's
    state = repo / "models/cas_fmnist_label/state/train_state.safetensors"
    before = state.read_bytes()  # the classifier's resume state of the last good run
    poison(repo / "models/fmnist_label/model.safetensors")
    for stage, metrics in (
        ("cas@fmnist_label", ["metrics/cas/fmnist_label.json"]),
        ("evaluate@fmnist_label", ["metrics/fmnist_label/eval.json"]),
    ):
        line = one_error_line(run(repo, "dvc", "repro", "-s", stage))
        assert "not finite" in line or "non-finite" in line, line
        assert "models/fmnist_label" in line or "samples of seed" in line, line
        for path in metrics:
            assert not (repo / path).exists(), path
    # no classifier trained on them (its state holds no new epoch), and the cleared
    # summary was not published again
    assert state.read_bytes() == before
    assert_no_summary(live)


@pytest.mark.parametrize(
    ("model", "figure", "section", "key", "value"),
    [
        ("fmnist_label", "fig5_all_classes.png", "models.fmnist_label.evaluate", "test_limit", 400),
        ("fmnist_text", "heldout_phrasings.png", "models.fmnist_text.evaluate", "test_limit", 400),
    ],
)
def test_an_evaluate_stage_whose_figure_fails_leaves_no_metric(
    repo, model, figure, section, key, value
):
    """A param change that moves every number, then the last figure cannot be written (its
    path is a folder): the stage cleared the finished run's eval.json and frontier.json when
    it started and writes its own last, so it leaves none: never the old numbers beside
    figures of the new params, nor new numbers without their figures."""
    metrics = [repo / "metrics" / model / name for name in ("eval.json", "frontier.json")]
    assert all(path.is_file() for path in metrics)  # the finished run's
    set_param(repo, section, key, value)
    target = repo / "reports" / model / figure
    target.unlink()
    (target / "blocker").mkdir(parents=True)
    result = run(repo, "t2i", "evaluate", model)
    assert result.returncode != 0, result.stdout + result.stderr
    assert [path for path in metrics if path.exists()] == []
