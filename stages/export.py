"""`t2i export MODEL DIR [--force]`: a self-contained, shareable model folder.

DIR gets config.json and model.safetensors (copied, then loaded back and compared with the
checked original), encoder.json for a text model (the caption encoder's params, so that the
folder loads without this repository's params.yaml), sample.png (a grid drawn through the
API) and README.md, a model card huggingface_hub parses (pipeline/model_card.py). The folder
is built beside DIR and renamed into place. Refused in one line: DIR inside a DVC output
folder (models/, metrics/, ...), DIR holding the model, the working directory or files that
no export wrote, an existing DIR without --force, a symlinked file in MODEL. Nothing here
touches the network; pushing the folder is the user's own `huggingface-cli upload`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
import yaml

from pipeline.api import ENCODER_FILE, encoder_params, grid, load
from pipeline.atomic import write_bytes, write_json
from pipeline.checkpoint import load_model
from pipeline.config import load_params
from pipeline.errors import PipelineError
from pipeline.figures import save_png
from pipeline.metrics import ModelCas, eval_schema, read_metrics
from pipeline.model_card import CardFacts, model_card, sample_prompts

FILES = ("config.json", "model.safetensors", ENCODER_FILE, "README.md", "sample.png")


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
            raise PipelineError(
                f"{dest}: holds {foreign[0]!r}, which no export wrote; --force replaces only "
                "an exported folder: remove it, or choose another DIR"
            )
    for name in ("config.json", "model.safetensors"):
        if (model_dir / name).is_symlink():
            raise PipelineError(
                f"{model_dir / name}: is a symlink; export copies a model folder's own files"
            )


def _facts(model, params, root: Path, folder: str) -> CardFacts:
    meta, schema = model.meta, eval_schema(model.meta)
    ev_path, cas_path = root / "metrics" / meta.name / "eval.json", root / "metrics" / "cas"
    evaluation = read_metrics(ev_path, schema) if schema and ev_path.is_file() else None
    cas_path = cas_path / f"{meta.name}.json"
    cas = read_metrics(cas_path, ModelCas) if cas_path.is_file() else None
    return CardFacts(meta, params.models.get(meta.name), evaluation, cas, folder)


def _sampling(model, facts: CardFacts) -> dict:
    """The evaluation's chosen (w, T), else the plain decoder."""
    chosen = getattr(facts.evaluation, "guidance", None)
    if chosen is None or not model.can_guide:
        return {"guidance": 0.0, "temperature": 1.0}
    return {"guidance": chosen.w, "temperature": chosen.temperature}


def _fill(folder: Path, model_dir: Path, model, facts: CardFacts, params) -> None:
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(model_dir / name, folder / name)
    copied, _ = load_model(folder)  # shapes and finite weights again, and the same tensors
    original = model.module.state_dict()
    for key, value in copied.state_dict().items():
        if not torch.equal(value, original[key].cpu()):
            raise PipelineError(f"{model_dir}: changed while exporting ({key}); retry")
    if model.meta.is_text:
        spec = encoder_params(model_dir, model.meta.conditioning, params.embed)
        write_json(folder / ENCODER_FILE, spec.model_dump(mode="json"))
    prompts = sample_prompts(model.meta)
    images = model.generate(prompts, n=8, seed=0, **_sampling(model, facts))
    save_png(grid(images, 8, labels=prompts), folder / "sample.png")
    write_bytes(folder / "README.md", str(model_card(facts)).encode())


def run(model_dir: Path, dest: Path, force: bool, params_path: Path) -> Path:
    """Export ``model_dir`` to ``dest``; returns ``dest``."""
    root = params_path.resolve().parent  # the repository: its dvc.yaml files and metrics/
    check_target(model_dir, dest, root, force)
    params = load_params(params_path)
    model = load(model_dir, params_path)
    facts = _facts(model, params, root, dest.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    old = None
    try:
        _fill(build, model_dir, model, facts, params)
        os.chmod(build, 0o777 & ~_umask())
        if dest.exists():  # --force, checked above: an exported folder
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
            os.replace(dest, old / "previous")
        os.replace(build, dest)
    finally:
        shutil.rmtree(build, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return dest


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
