"""docs/params.md is generated from the schema and must be current."""

import subprocess
import sys

from .conftest import REPO, run_env


def test_params_reference_is_current_and_lists_every_key_with_its_description():
    result = subprocess.run(
        [sys.executable, "scripts/params_table.py", "--check"],
        cwd=REPO,
        env=run_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, "run `python scripts/params_table.py`: " + result.stdout
    text = (REPO / "docs/params.md").read_text()
    assert "## `models.fmnist_text_prior.train`" in text
    assert "| `arch.cond_noise` | `0.06` | float | training noise on the condition |" in text
    assert "| `keep_epochs` | `[40, 100]` |" in text


def test_a_stale_reference_is_detected(tmp_path):
    """The check compares the whole page: one changed character makes it fail."""
    import shutil

    copy = tmp_path / "repo"
    (copy / "docs").mkdir(parents=True)
    shutil.copytree(REPO / "scripts", copy / "scripts")
    shutil.copytree(REPO / "pipeline", copy / "pipeline")
    shutil.copy(REPO / "params.yaml", copy / "params.yaml")
    text = (REPO / "docs/params.md").read_text()
    (copy / "docs/params.md").write_text(text.replace("`0.06`", "`0.07`"))
    result = subprocess.run(
        [sys.executable, "scripts/params_table.py", "--check"],
        cwd=copy,
        env=run_env(copy),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "run scripts/params_table.py" in result.stdout
