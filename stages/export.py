"""`t2i export MODEL DIR [--force]`: a self-contained, shareable model folder (its files and
model card: pipeline/model_card.py), built beside DIR and renamed into place. Refused in one
line: DIR inside a DVC output folder (models/, metrics/, ...), DIR holding the model, the
working directory or files no export wrote, an existing DIR without --force, a symlinked file
in MODEL (config.json, model.safetensors, density.safetensors). A label model's ex-post
density travels with it when its config.json records one, checked against the sha256 there,
so that sampler expost works from the folder alone. No network: pushing the folder is the
user's own `huggingface-cli upload`."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import yaml

from pipeline.api import load
from pipeline.config import load_params
from pipeline.errors import PipelineError
from pipeline.latent_density import DENSITY_FILE
from pipeline.model_card import FILES, card_facts, write_folder


def output_roots(root: Path) -> set[Path]:
    """The top folders of every DVC output that root's dvc.yaml files name (models/, data/,
    metrics/, reports/ ...); models/ always."""
    roots, stack = {root / "models"}, []
    for path in [root / "dvc.yaml", *sorted(root.glob("*/dvc.yaml"))]:
        try:
            stack.append((yaml.safe_load(path.read_text()), path.parent))
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue
    while stack:
        node, base = stack.pop()
        if isinstance(node, dict):
            base = base / str(node["wdir"]) if isinstance(node.get("wdir"), str) else base
            for key, value in node.items():
                if key in ("outs", "metrics", "plots") and isinstance(value, list):
                    for item in value:
                        name = next(iter(item), "") if isinstance(item, dict) else item
                        top = os.path.relpath(base / str(name), root).split(os.sep)[0]
                        if top not in ("", ".", "..") and not top.startswith("$"):
                            roots.add(root / top)
                stack.append((value, base))
        elif isinstance(node, list):
            stack += [(value, base) for value in node]
    return {r.resolve() for r in roots}


def check_target(model_dir: Path, dest: Path, root: Path, force: bool) -> None:
    """Refuse a destination that is no place for an export, before anything is read."""
    target = dest.resolve()
    for folder in sorted(output_roots(root)):
        if target == folder or folder in target.parents:
            raise PipelineError(
                f"{dest}: inside {folder.name}/, a DVC output folder; export outside the "
                "pipeline's outputs"
            )
    for what, path in (("the model", model_dir), ("the working directory", Path.cwd())):
        if target == path.resolve() or target in path.resolve().parents:
            raise PipelineError(f"{dest}: holds {what}; export into a folder of its own")
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise PipelineError(f"{dest}: exists and is no folder; choose another DIR")
    if dest.exists():
        if not force:
            raise PipelineError(f"{dest}: exists; give --force to replace it")
        foreign = sorted(p.name for p in dest.iterdir() if p.name not in FILES)
        if foreign:
            raise PipelineError(f"{dest}: holds {foreign[0]!r}, which no export wrote; kept")
    for name in ("config.json", "model.safetensors", DENSITY_FILE):
        if (model_dir / name).is_symlink():
            raise PipelineError(
                f"{model_dir / name}: is a symlink; export copies a model folder's own files"
            )


def run(model_dir: Path, dest: Path, force: bool, params_path: Path) -> Path:
    """Export ``model_dir`` to ``dest``; returns ``dest``."""
    root = params_path.resolve().parent  # the repository: its dvc.yaml files and metrics/
    check_target(model_dir, dest, root, force)
    params = load_params(params_path)
    model = load(model_dir, params_path)
    entry = params.models.get(model.name)
    facts = card_facts(model.meta, entry, root / "metrics", dest.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    old = None
    try:
        write_folder(build, model_dir, model, facts, params.embed)
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(build, 0o777 & ~mask)  # mkdtemp's 0700, as a plain mkdir would make it
        if dest.exists():  # --force, checked above: an exported folder
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
            os.replace(dest, old / "previous")
        os.replace(build, dest)
    finally:
        shutil.rmtree(build, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return dest
