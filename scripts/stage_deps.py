"""The foreach items of every model stage, from params.yaml `models:`, and the code deps of
every DVC stage, derived from what the stage imports.

Items: each stage group that runs named models (``train``, ``evaluate``, ``cas`` and their
``_text`` twins in dvc.yaml; ``train`` and ``evaluate`` in coco/dvc.yaml) has one item per
entry of ``models:`` that it serves (GROUPS below: by the entry's data and conditioning); a
text model's item names its encoder (``${item.encoder}``: its embeddings folder). The plots
of the root dvc.yaml list each Fashion-MNIST model's frontier. So adding a model is its
params entry and one run of this script.

Rule: a stage's ``cmd`` is ``t2i COMMAND [ARG ...]``; ``stages.commands.stage_module`` names the
stage module that runs it (the lookup the CLI itself uses). The stage's code deps are that
module and every module of ``pipeline/`` and ``stages/`` it imports, directly or
transitively, at any depth of the file (imports inside functions count), plus the packages'
``__init__.py`` on the way. A string constant that names a module of this project
(``"pipeline.encoders.clip:ClipEncoder"``) counts as an import: registries that load their
classes by name are followed too. Every other dep (data, captions, weights) is written by hand.

The class table (pipeline/models/registry.py) is the exception: it names every class, but a
stage runs one. Its names are not followed; instead a cmd word that names a model entry
(``t2i train fmnist_label``) adds its class's file and what it imports, and ``t2i judge`` and
``t2i cas`` add the judge's. So an edit of pipeline/models/cvae_clip.py reruns the stages of
the models of that class alone.

Stages of one ``foreach`` share one deps list. What all items of a group import is written
as it is; what only some import goes into each item's ``code1``, ``code2``, ... (written
here), and the deps list names ``${item.code1}``, ... An item with fewer such files repeats
its last one (DVC reads a repeated dep once).

    python scripts/stage_deps.py           # rewrite the items and code deps of both dvc files
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


def model_entries(root: Path = ROOT) -> dict:
    """params.yaml's ``models:``, validated."""
    from pipeline.config import load_params

    return load_params(root / "params.yaml").models


def model_modules(cmd: str, root: Path = ROOT) -> tuple[str, ...]:
    """The class modules of what ``cmd``'s words name: model entries, and the judge (which
    ``t2i judge`` trains and ``t2i cas`` builds as its classifier)."""
    from pipeline.models.registry import class_module

    words = shlex.split(cmd)[1:]
    entries = model_entries(root)
    modules = [class_module(entries[w].class_name) for w in words if w in entries]
    if words and words[0] in ("judge", "cas"):
        modules.append(class_module("judge"))
    return tuple(modules)


def stage_code_deps(cmd: str, root: Path = ROOT) -> list[str]:
    """What the stage running ``cmd`` imports: its stage module, and the models it names."""
    return code_deps(entry_module(cmd, root), root, model_modules(cmd, root))


def entry_module(cmd: str, root: Path = ROOT) -> str:
    """The stage module that ``cmd`` (``t2i COMMAND ARG...``) runs."""
    from stages.commands import stage_module

    words = shlex.split(cmd)
    if not words or words[0] != "t2i" or len(words) < 2:
        raise SystemExit(f"stage cmd {cmd!r}: expected `t2i COMMAND [ARG ...]`")
    return stage_module(words[1], words[2] if len(words) > 2 else None, root / "params.yaml")


def _fmnist(text: bool):
    return lambda e: e.data == "fmnist" and e.is_text == text


# (dvc file, stage group) -> which entries of models: it runs
GROUPS = {
    ("dvc.yaml", "train"): _fmnist(False),
    ("dvc.yaml", "evaluate"): _fmnist(False),
    ("dvc.yaml", "cas"): _fmnist(False),
    ("dvc.yaml", "train_text"): _fmnist(True),
    ("dvc.yaml", "evaluate_text"): _fmnist(True),
    ("dvc.yaml", "cas_text"): _fmnist(True),
    ("coco/dvc.yaml", "train"): lambda e: e.data == "coco",
    ("coco/dvc.yaml", "evaluate"): lambda e: e.data == "coco",
}
FRONTIER_PLOT = "Guidance frontier, judge accuracy against judge-feature FD (docs/guidance.md)"


def wanted_items(root: Path = ROOT) -> dict[tuple[str, str], dict[str, dict]]:
    """(dvc file, group) -> {model: its item's data keys} (code slots aside)."""
    entries = model_entries(root)
    return {
        group: {
            name: ({"encoder": e.conditioning} if e.is_text else {})
            for name, e in entries.items()
            if serves(e)
        }
        for group, serves in GROUPS.items()
    }


def wanted_frontier_plot(root: Path = ROOT) -> dict[str, str]:
    entries = model_entries(root)
    return {
        f"metrics/{n}/frontier.json": "accuracy" for n, e in entries.items() if e.data == "fmnist"
    }


def item_drift(root: Path = ROOT) -> list[str]:
    """One line per group whose items (or the frontier plot) differ from models:."""
    from ruamel.yaml import YAML

    lines = []
    docs = {f: YAML().load((root / f).read_text()) for f in DVC_FILES}
    for (dvc_file, group), items in wanted_items(root).items():
        have = docs[dvc_file]["stages"][group]["foreach"]
        got = {k: {x: v[x] for x in v if not str(x).startswith(SLOT)} for k, v in have.items()}
        if got != items:
            lines.append(f"{dvc_file}: {group}: items {dict(got)} but models: gives {items}")
    for plot in docs["dvc.yaml"].get("plots", []):
        if FRONTIER_PLOT in plot and dict(plot[FRONTIER_PLOT]["y"]) != wanted_frontier_plot(root):
            lines.append(f"dvc.yaml: plots: {FRONTIER_PLOT!r} does not list every frontier")
    return lines


def write_items(root: Path = ROOT) -> list[str]:
    """Make each group's foreach items those of models: (a new item's code slot is its class
    file until the code deps are written); the frontier plot lists every frontier."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    from pipeline.models.registry import class_module

    yaml = _yaml()
    entries = model_entries(root)
    changed = []
    for dvc_file in DVC_FILES:
        path = root / dvc_file
        doc = yaml.load(path.read_text())
        for (file, group), items in wanted_items(root).items():
            if file != dvc_file:
                continue
            old = doc["stages"][group]["foreach"]
            new = CommentedMap()
            wdir = (path.parent / doc["stages"][group]["do"].get("wdir", ".")).resolve()
            for name, data in items.items():
                entry = CommentedMap(data)
                slots = {k: v for k, v in (old.get(name) or {}).items() if str(k).startswith(SLOT)}
                if not slots:
                    module = module_file(class_module(entries[name].class_name), root)
                    slots = {f"{SLOT}1": os.path.relpath(module, wdir)}
                entry.update(slots)
                entry.fa.set_block_style()
                new[name] = entry
            if dict(old) != dict(new):
                doc["stages"][group]["foreach"] = new
                changed.append(f"{dvc_file}:{group}")
        for plot in doc.get("plots", []) if dvc_file == "dvc.yaml" else []:
            if FRONTIER_PLOT in plot:
                want = wanted_frontier_plot(root)
                if dict(plot[FRONTIER_PLOT]["y"]) != want:
                    plot[FRONTIER_PLOT]["y"] = CommentedMap(want)
                    changed.append("dvc.yaml:plots")
        with open(path, "w") as handle:
            yaml.dump(doc, handle)
    del YAML
    return changed


def _yaml():
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 100
    return yaml


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
    """One line per group whose items differ from models:, then one per stage whose declared
    code deps differ from its imports."""
    lines = item_drift(root)
    if lines:
        return lines  # the stages DVC sees are not yet those of models:
    for stage in declared_stages(root):
        want = set(stage_code_deps(stage.cmd, root))
        have = set(declared_code_deps(stage, root))
        for path in sorted(want - have):
            lines.append(f"{address(stage)}: imports {path}, not a declared dep")
        for path in sorted(have - want):
            lines.append(f"{address(stage)}: declares {path}, which it does not import")
    return lines


def rewrite(root: Path = ROOT) -> list[str]:
    """Write the items of models:, then replace the code deps of every stage definition; other
    deps keep their order."""
    yaml = _yaml()
    changed = write_items(root)
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
    print("rewrote " + ", ".join(dict.fromkeys(changed)) if changed else "nothing to change")
    return 0


if __name__ == "__main__":
    sys.exit(main())
