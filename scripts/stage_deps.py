"""The code deps of every DVC stage, derived from what the stage imports.

Rule: a stage's ``cmd`` is ``t2i COMMAND [ARG ...]``; ``stages.commands.stage_module`` names the
stage module that runs it (the lookup the CLI itself uses). The stage's code deps are that
module and every module of ``pipeline/`` and ``stages/`` it imports, directly or
transitively, at any depth of the file (imports inside functions count), plus the packages'
``__init__.py`` on the way. A string constant that names a module of this project
(``"pipeline.encoders.clip:ClipEncoder"``) counts as an import: registries that load their
classes by name are followed too. Every other dep (data, captions, weights) is written by hand.

The model registry (pipeline/models/registry.py) is the exception: it names every model, but
a stage runs one. Its names are not followed; instead a cmd word that names a registry model
(``t2i train fmnist_label``, ``t2i judge``) adds that model's file and what it imports. So an
edit of pipeline/models/cvae_clip.py reruns the stages of coco_clip alone.

Stages of one ``foreach`` share one deps list. What all items of a group import is written
as it is; what only some import goes into each item's ``code1``, ``code2``, ... (written
here), and the deps list names ``${item.code1}``, ... An item with fewer such files repeats
its last one (DVC reads a repeated dep once).

    python scripts/stage_deps.py           # rewrite the code deps in dvc.yaml and coco/dvc.yaml
    python scripts/stage_deps.py --check   # list the drift and exit 1 (tests/test_stage_deps.py)

A ``matrix`` or a ``foreach`` over a list has no per-item slots: its items must import the
same modules; the script stops with the stage names when they do not.
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
LAZY_REGISTRIES = ("pipeline/models/registry.py",)  # names followed per stage, not all at once
SLOT = "code"  # per-item code deps of a foreach: ${item.code1}, ${item.code2}, ...


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
            if path.relative_to(root).as_posix() in LAZY_REGISTRIES:
                continue  # one model per stage: model_modules()
            named = NAMED_MODULE.match(node.value)  # a registry entry "package.module:Class"
            if named:
                found.add(named.group(1))
    return {m for m in found if module_file(m, root) is not None}


def code_deps(entry: str, root: Path = ROOT, models: tuple[str, ...] = ()) -> list[str]:
    """Repo-relative files of ``entry`` (and of the ``models`` modules) and all they import
    inside PACKAGES, sorted."""
    seen: set[str] = set()
    todo = [entry, *models]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            prefix = ".".join(parts[:i])
            if prefix not in seen and module_file(prefix, root) is not None:
                seen.add(prefix)
                todo.extend(imported_modules(module_file(prefix, root), root))
    return sorted(module_file(m, root).relative_to(root).as_posix() for m in seen)


def model_modules(cmd: str) -> tuple[str, ...]:
    """The modules of the registry models that ``cmd``'s words name, in order."""
    from pipeline.models.registry import REGISTRY

    return tuple(REGISTRY[w].module for w in shlex.split(cmd)[1:] if w in REGISTRY)


def stage_code_deps(cmd: str, root: Path = ROOT) -> list[str]:
    """What the stage running ``cmd`` imports: its stage module, and the models it names."""
    return code_deps(entry_module(cmd), root, model_modules(cmd))


def entry_module(cmd: str) -> str:
    """The stage module that ``cmd`` (``t2i COMMAND ARG...``) runs."""
    from stages.commands import stage_module

    words = shlex.split(cmd)
    if not words or words[0] != "t2i" or len(words) < 2:
        raise SystemExit(f"stage cmd {cmd!r}: expected `t2i COMMAND [ARG ...]`")
    return stage_module(words[1], words[2] if len(words) > 2 else None)


def is_code(dep: str) -> bool:
    return dep.split("/")[0] in PACKAGES


def _is_code_entry(dep: str, wdir: Path, root: Path) -> bool:
    """A code dep as dvc.yaml writes it: a path under PACKAGES, or a per-item slot."""
    return dep.startswith(f"${{item.{SLOT}") or is_code(os.path.relpath(wdir / dep, root))


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


def wanted_deps(root: Path = ROOT) -> dict[tuple[str, str], dict[str, list[str]]]:
    """(dvc file, stage definition name) -> {item (None for a plain stage): code deps}."""
    wanted: dict[tuple[str, str], dict[str, list[str]]] = {}
    for stage in declared_stages(root):
        group, _, item = stage.name.partition("@")
        key = (stage.path_in_repo, group)
        wanted.setdefault(key, {})[item or None] = stage_code_deps(stage.cmd, root)
    return wanted


def split_group(items: dict[str, list[str]]) -> tuple[list[str], dict[str, list[str]]]:
    """(what every item imports, {item: what it alone of them imports, padded to one length})."""
    common = sorted(set.intersection(*(set(d) for d in items.values())))
    own = {item: [d for d in deps if d not in common] for item, deps in items.items()}
    width = max(len(files) for files in own.values())
    return common, {k: files + files[-1:] * (width - len(files)) for k, files in own.items()}


def drift(root: Path = ROOT) -> list[str]:
    """One line per stage whose declared code deps differ from its imports."""
    lines = []
    for stage in declared_stages(root):
        want = set(stage_code_deps(stage.cmd, root))
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
            common, own = split_group(wanted[(dvc_file, name)])
            slots = max(len(files) for files in own.values())
            if slots and not isinstance(definition.get("foreach"), dict):
                raise SystemExit(
                    f"{dvc_file}: the items of {name} import different modules: make its "
                    "foreach a mapping of item -> mapping, so that each item names its own"
                )
            for item, files in own.items():
                entry = definition["foreach"][item] if slots else {}
                if not isinstance(entry, dict):
                    raise SystemExit(f"{dvc_file}: {name}: item {item} must be a mapping")
                for key in [k for k in entry if re.fullmatch(rf"{SLOT}\d+", str(k))]:
                    del entry[key]
                for i, file in enumerate(files, 1):
                    entry[f"{SLOT}{i}"] = os.path.relpath(root / file, wdir)
                if slots:
                    entry.fa.set_block_style()  # one dep a line, as in the deps list
            code = [os.path.relpath(root / p, wdir) for p in common]
            code += [f"${{item.{SLOT}{i}}}" for i in range(1, slots + 1)]
            deps = body.setdefault("deps", [])
            data = [d for d in deps if not _is_code_entry(str(d), wdir, root)]
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
