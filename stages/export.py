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

from pipeline.api import load
from pipeline.config import load_params
from pipeline.model_card import card_facts, check_target, write_folder


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
