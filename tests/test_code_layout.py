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
    # stages/cli.py is the `t2i` command's option declarations, not a stage.
    stages = sorted(p for p in (REPO / "stages").glob("*.py") if p.name != "cli.py")
    assert len(stages) > 10
    long = {p.name: n for p in stages if (n := len(p.read_text().splitlines())) > 100}
    assert long == {}, "move the library work into pipeline/"


def test_no_stage_or_command_branches_on_a_model_name():
    paths = sorted((REPO / "stages").glob("*.py"))
    assert REPO / "stages/cli.py" in paths
    for path in paths:
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


STAGES_MODULE = re.compile(r"^(stages(?:\.\w+)*)(?::\w+)?$")  # "stages.x" or "stages.x:func"


def stage_references(source: str) -> list[str]:
    """Every import of ``stages`` in ``source``: import statements at any depth, and string
    constants naming a stages module, as importlib.import_module("stages.x") or a
    "stages.x:func" registry entry would."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if not node.level else []
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [m.group(1) for m in [STAGES_MODULE.match(node.value)] if m]
        else:
            continue
        found += [f"{node.lineno}: {n}" for n in names if n.split(".")[0] == "stages"]
    return found


def test_the_library_never_imports_a_stage():
    library = sorted((REPO / "pipeline").rglob("*.py"))
    assert len(library) > 30
    found = {
        path.relative_to(REPO).as_posix(): refs
        for path in library
        if (refs := stage_references(path.read_text()))
    }
    assert found == {}, "pipeline/ is the library: the stages and the CLI import it, not back"


def test_the_stage_import_check_sees_every_way_in():
    for source in (
        "import stages.train",
        "from stages import cli",
        "def f():\n    from stages.report import run",
        "importlib.import_module('stages.judge')",
        "TABLE = {'x': 'stages.cas:run'}",
    ):
        assert len(stage_references(source)) == 1, source
    assert stage_references("stages = ['a']\nprint('the stages ran')\nimport pipeline") == []


def test_test_helpers_stay_out_of_the_stages_and_the_library():
    # pipeline/testing/ builds small real inputs for the tests and benchmarks; no stage and no
    # other library module may use it, so it never becomes a stage's code dep.
    code = [
        p
        for p in [*(REPO / "pipeline").rglob("*.py"), *(REPO / "stages").glob("*.py")]
        if "testing" not in p.relative_to(REPO).parts
    ]
    uses = {
        p.relative_to(REPO).as_posix(): n
        for p in code
        for n in imported_names(p)
        if n.startswith("pipeline.testing")
    }
    assert uses == {}


def test_stage_deps_reads_the_dispatch_table_not_the_cli():
    # scripts/stage_deps.py needs only which module runs each command (stages/commands.py);
    # the CLI (stages/cli.py: typer, signal handlers) sits above it.
    names = imported_names(REPO / "scripts/stage_deps.py")
    assert "stages.commands" in names
    assert not {n for n in names if n in ("stages.cli", "typer") or n.startswith("pipeline.cli")}
    assert "stages.cli" not in imported_names(REPO / "stages/commands.py")
