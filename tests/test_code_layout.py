"""Rules of the house that a reader relies on: what may import what, how long a stage is."""

import ast

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
