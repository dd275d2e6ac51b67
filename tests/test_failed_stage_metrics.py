"""No metric from a failed stage (issue 21, cases 3 and 6), through the real stage commands and
`dvc repro` on a copy of the finished tiny root run: a refused judge, CAS and evaluation of a
model whose weights hold NaN, and evaluate stages whose figures fail after their numbers."""

import subprocess
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

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


def test_a_judge_refused_by_min_accuracy_leaves_no_metric(repo):
    metrics = repo / "metrics/judge/train/metrics.json"
    assert metrics.is_file()  # the finished run's
    set_param(repo, "judge", "min_accuracy", 0.999)
    line = one_error_line(run(repo, "dvc", "repro", "-s", "judge"))
    assert line.startswith("error: judge: test accuracy ") and "below judge.min_accuracy" in line
    assert not metrics.exists()  # `dvc metrics diff` shows no judge that does not exist
    assert not (repo / "models/judge/model.safetensors").exists()


def poison(weights: Path) -> None:
    """Every float weight NaN: a model that diverged, still a readable file."""
    tensors = load_file(str(weights))
    save_file(
        {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in tensors.items()},
        str(weights),
    )


def test_cas_and_evaluate_of_a_nan_model_fail_with_one_line_and_record_no_metric(repo):
    live = repo / "metrics/cas/fmnist_label/train/metrics.json"  # the last good run's
    before = live.read_bytes()
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
    assert live.read_bytes() == before  # no classifier trained on them


@pytest.mark.parametrize(
    ("model", "figure", "section", "key", "value"),
    [
        ("fmnist_label", "fig5_all_classes.png", "evaluate.fmnist_label", "test_limit", 400),
        ("fmnist_text", "heldout_phrasings.png", "evaluate.fmnist_text", "test_limit", 400),
    ],
)
def test_an_evaluate_stage_whose_figure_fails_leaves_its_metrics_unchanged(
    repo, model, figure, section, key, value
):
    """A param change that moves every number, then the last figure cannot be written (its
    path is a folder): eval.json keeps the numbers of the finished run."""
    metrics = repo / "metrics" / model / "eval.json"
    before = metrics.read_bytes()
    set_param(repo, section, key, value)
    target = repo / "reports" / model / figure
    target.unlink()
    (target / "blocker").mkdir(parents=True)
    result = run(repo, "t2i", "evaluate", model)
    assert result.returncode != 0, result.stdout + result.stderr
    assert metrics.read_bytes() == before
