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
