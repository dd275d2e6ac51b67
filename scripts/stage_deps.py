"""The code deps of every DVC stage, derived from what the stage imports.

Rule: a stage's ``cmd`` is ``t2i COMMAND [ARG ...]``; ``stages.commands.stage_module`` names the
stage module that runs it (the lookup the CLI itself uses). The stage's code deps are that
module and every module of ``pipeline/`` and ``stages/`` it imports, directly or
transitively, at any depth of the file (imports inside functions count), plus the packages'
``__init__.py`` on the way. A string constant that names a module of this project
(``"pipeline.encoders.clip:ClipEncoder"``) counts as an import: registries that load their
classes by name are followed too. Every other dep (data, captions, weights) is written by hand.

    python scripts/stage_deps.py           # rewrite the code deps in dvc.yaml and coco/dvc.yaml
    python scripts/stage_deps.py --check   # list the drift and exit 1 (tests/test_stage_deps.py)

Stages of one ``foreach``/``matrix`` share one deps list, so their items must import the same
modules; the script stops with the stage names when they do not.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages")  # the code that stages run; everything else is data
DVC_FILES = ("dvc.yaml", "coco/dvc.yaml")
NAMED_MODULE = re.compile(r"^((?:pipeline|stages)(?:\.\w+)+)(?::\w+)?$")  # "pkg.mod:Class"


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """``pipeline.data.fmnist`` -> root/pipeline/data/fmnist.py (or a package's __init__.py)."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Names of this project's modules that ``path`` imports or names, resolved to files."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..data import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # submodules
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            named = NAMED_MODULE.match(node.value)  # a registry entry "package.module:Class"
            if named:
                found.add(named.group(1))
    return {m for m in found if module_file(m, root) is not None}


def code_deps(entry: str, root: Path = ROOT) -> list[str]:
    """Repo-relative files of ``entry`` and all it imports inside PACKAGES, sorted."""
    seen: set[str] = set()
    todo = [entry]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            prefix = ".".join(parts[:i])
            if prefix not in seen and module_file(prefix, root) is not None:
                seen.add(prefix)
                todo.extend(imported_modules(module_file(prefix, root), root))
    return sorted(module_file(m, root).relative_to(root).as_posix() for m in seen)


def entry_module(cmd: str) -> str:
    """The stage module that ``cmd`` (``t2i COMMAND ARG...``) runs."""
    from stages.commands import stage_module

    words = shlex.split(cmd)
    if not words or words[0] != "t2i" or len(words) < 2:
        raise SystemExit(f"stage cmd {cmd!r}: expected `t2i COMMAND [ARG ...]`")
    return stage_module(words[1], words[2] if len(words) > 2 else None)


def is_code(dep: str) -> bool:
    return dep.split("/")[0] in PACKAGES


def address(stage) -> str:
    """``train@fmnist_label``, ``coco/dvc.yaml:train@coco_clip``: as `dvc status` names it."""
    return stage.name if stage.path_in_repo == "dvc.yaml" else f"{stage.path_in_repo}:{stage.name}"


def declared_stages(root: Path = ROOT) -> list:
    """DVC's own view of every stage of DVC_FILES: names, cmds and deps resolved."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        stages = [s for s in repo.index.stages if s.path_in_repo in DVC_FILES]
    return sorted(stages, key=address)


def declared_code_deps(stage, root: Path = ROOT) -> list[str]:
    """A stage's declared deps under PACKAGES, repo-relative (files or folders)."""
    deps = [
        Path(os.path.relpath(d.fs_path, root)).as_posix()
        for d in stage.deps
        if getattr(d, "def_path", None) and not hasattr(d, "params")
    ]
    return sorted(d for d in deps if is_code(d))


def wanted_deps(root: Path = ROOT) -> dict[tuple[str, str], list[str]]:
    """(dvc file, stage definition name) -> code deps, repo-relative."""
    wanted: dict[tuple[str, str], list[str]] = {}
    origin: dict[tuple[str, str], str] = {}
    for stage in declared_stages(root):
        key = (stage.path_in_repo, stage.name.split("@")[0])
        deps = code_deps(entry_module(stage.cmd), root)
        if key in wanted and wanted[key] != deps:
            raise SystemExit(
                f"{key[0]}: {origin[key]} and {stage.name} import different "
                "modules but share one deps list: split the stage"
            )
        wanted[key], origin[key] = deps, stage.name
    return wanted


def drift(root: Path = ROOT) -> list[str]:
    """One line per stage whose declared code deps differ from its imports."""
    lines = []
    for stage in declared_stages(root):
        want = set(code_deps(entry_module(stage.cmd), root))
        have = set(declared_code_deps(stage, root))
        for path in sorted(want - have):
            lines.append(f"{address(stage)}: imports {path}, not a declared dep")
        for path in sorted(have - want):
            lines.append(f"{address(stage)}: declares {path}, which it does not import")
    return lines


def rewrite(root: Path = ROOT) -> list[str]:
    """Replace the code deps of every stage definition; other deps keep their order."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 100
    changed = []
    wanted = wanted_deps(root)
    for dvc_file in DVC_FILES:
        path = root / dvc_file
        doc = yaml.load(path.read_text())
        for name, definition in doc["stages"].items():
            if (dvc_file, name) not in wanted:
                continue
            body = definition.get("do", definition)
            wdir = (path.parent / body.get("wdir", ".")).resolve()
            code = [os.path.relpath(root / p, wdir) for p in wanted[(dvc_file, name)]]
            deps = body.setdefault("deps", [])
            data = [d for d in deps if not is_code(os.path.relpath(wdir / str(d), root))]
            if list(deps) != [*data, *code]:
                deps[:] = [*data, *code]
                changed.append(f"{dvc_file}:{name}")
        with open(path, "w") as handle:
            yaml.dump(doc, handle)
    return changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report drift, change nothing")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.check:
        lines = drift()
        print("\n".join(lines) or "code deps match the imports of every stage")
        return 1 if lines else 0
    changed = rewrite()
    print("rewrote the code deps of " + ", ".join(changed) if changed else "nothing to change")
    return 0


if __name__ == "__main__":
    sys.exit(main())
