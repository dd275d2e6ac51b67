"""Rules of the house that a reader relies on: what may import what, how long a stage is."""

import ast
import re
import subprocess
import sys

from .conftest import REPO


def imported_names(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_benchmarks_do_not_import_the_tests():
    scripts = sorted((REPO / "benchmarks").glob("*.py"))
    assert scripts
    for path in scripts:
        assert not {n for n in imported_names(path) if n.split(".")[0] == "tests"}, path.name


def test_every_stage_module_fits_on_one_screen():
    stages = sorted((REPO / "stages").glob("*.py"))
    assert len(stages) > 10
    long = {p.name: n for p in stages if (n := len(p.read_text().splitlines())) > 100}
    assert long == {}, "move the library work into pipeline/"


def test_no_stage_or_command_branches_on_a_model_name():
    for path in [*(REPO / "stages").glob("*.py"), REPO / "pipeline/cli.py"]:
        source = path.read_text()
        for name in ("fmnist_label", "fmnist_text", "coco_clip", "coco_t5"):
            assert f'== "{name}"' not in source and f"== '{name}'" not in source, path.name


def _python_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    return out.split()


def test_the_formatter_and_linter_pass():
    files = _python_files()
    assert len(files) > 50
    for args in (["format", "--check"], ["check"]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *args, *files], cwd=REPO, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_fmt_skip_says_why():
    # A `# fmt: skip` fights the formatter; it is allowed only where a reason follows it,
    # for example `# fmt: skip (aligned table)`.
    bare = [
        f"{name}:{number}"
        for name in _python_files()
        for number, line in enumerate((REPO / name).read_text().splitlines(), 1)
        if re.search(r"# fmt: (skip|off)\s*$", line)
    ]
    assert bare == []
