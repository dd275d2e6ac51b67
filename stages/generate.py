"""`t2i generate`: PNG grids from any trained model folder, through the Python API
(pipeline/api.py), so that a seed gives the same pixels here and in a notebook.

A label model takes --label ('sneaker'), a text model --caption (embedded with the encoder it
was trained on); --negative CAPTION or --negative-label LABEL steer guidance away from a
condition (they need --guidance > 0). --prompts FILE -o FOLDER draws every line of FILE:
FOLDER/NNNN-<slug>.png per line and FOLDER/grid.png of all; a bad line is reported by its
number, the others are still written, and the command then fails.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import typer

from pipeline.api import Condition, Model, check_sampling, grid, load, read_prompts
from pipeline.errors import PipelineError, utf8_text
from pipeline.figures import image_grid, save_png


@dataclass(frozen=True)
class Request:
    """What the command line asked for."""

    label: str | None
    caption: str | None
    negative: str | None
    negative_label: str | None
    n: int
    columns: int
    sampling: dict  # guidance, temperature, seed: pipeline.api.Model.generate's keywords


def _option(model: Model, caption: str | None, label: str | None, what: str) -> str | None:
    """The one of --caption/--label (or their --negative forms) that fits the model."""
    flags = ("--caption", "--label") if what == "prompt" else ("--negative", "--negative-label")
    wanted, other = (caption, label) if model.kind == "text" else (label, caption)
    right, wrong = flags if model.kind == "text" else flags[::-1]
    if caption is not None and label is not None:
        raise PipelineError(
            f"conflicting options {flags[0]} and {flags[1]}: {model.path} is a {model.kind} "
            f"model; give {right} only"
        )
    if other is not None:
        kind = "text" if model.kind == "text" else "labels"
        raise PipelineError(f"{model.path} is conditioned on {kind}: give {right}, not {wrong}")
    return wanted


def negative(model: Model, request: Request) -> Condition | None:
    """The negative prompt's condition, or None; refused without guidance to use it."""
    text = _option(model, request.negative, request.negative_label, "negative")
    if text is None:
        return None
    flag = "--negative" if model.kind == "text" else "--negative-label"
    if request.sampling["guidance"] == 0:
        raise PipelineError(f"{flag} needs --guidance > 0: at w = 0 it changes nothing")
    return model.condition(text, flag)


def one(model_dir: Path, request: Request, output: Path, params: Path | None) -> Path:
    """One grid of n images for --caption or --label, written to ``output``."""
    model = load(model_dir, params)
    text = _option(model, request.caption, request.label, "prompt")
    if text is None:
        kind, flag = ("text", "--caption '...'") if model.kind == "text" else ("labels", "--label")
        raise PipelineError(f"{model.path} is conditioned on {kind}: give {flag}")
    condition = model.condition(text, "--caption" if model.kind == "text" else "--label")
    sampling = {**request.sampling, "negative": negative(model, request)}
    images = model.generate([condition], n=request.n, **sampling)
    save_png(grid(images, request.columns), output)
    return output


def slug(text: str) -> str:
    """Lowercase a-z, 0-9 and '-' of ``text``, at most 40 characters (a file name part)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-")


def from_file(
    model_dir: Path, request: Request, prompts: Path, folder: Path, params: Path | None
) -> int:
    """Every line of ``prompts`` drawn into ``folder``; returns how many lines failed."""
    lines = read_prompts(prompts)  # bounded and checked before any model is read
    if not lines:
        raise PipelineError(f"{prompts}: no prompts (blank lines and # comments only)")
    model = load(model_dir, params)
    model.check_count(request.n, len(lines))
    sampling = {**request.sampling, "negative": negative(model, request)}
    folder.mkdir(parents=True, exist_ok=True)
    rows, labels, failed = [], [], []
    for number, text in lines:
        where = f"{prompts} line {number}"
        try:
            condition = model.condition(text, where)
        except PipelineError as exc:
            message = str(exc) if str(exc).startswith(where) else f"{where}: {exc}"
            typer.echo(f"error: {message}", err=True)
            failed.append(number)
            continue
        images = model.generate([condition], n=request.n, **sampling)
        name = "-".join(filter(None, [f"{number:04d}", slug(condition.text)])) + ".png"
        save_png(grid(images, request.columns), folder / name)
        for start in range(0, len(images), request.columns):
            rows.append(np.stack(images[start : start + request.columns]))
            labels.append(f"{number}: {condition.text[:40]}" if start == 0 else "")
    if rows:  # one row per line (more when n > --columns), labelled with its number
        scale = max(1, 64 // rows[0].shape[1])
        save_png(image_grid(rows, labels, scale=scale), folder / "grid.png")
    typer.echo(f"{len(lines) - len(failed)} of {len(lines)} prompts drawn into {folder}")
    return len(failed)


def run(
    model_dir: Path, request: Request, prompts: Path | None, output: Path, params: Path | None
) -> str:
    """The command: options checked before any model is read, then one grid or a folder."""
    flags = ("--label", "--caption", "--negative", "--negative-label")
    for flag, text in zip(
        flags,
        (request.label, request.caption, request.negative, request.negative_label),
        strict=True,
    ):
        if text is not None:
            utf8_text(text, flag)
    check_sampling(**request.sampling)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # an error stays one line
    if prompts is not None:
        if request.label is not None or request.caption is not None:
            raise PipelineError("conflicting options: --prompts, and --caption or --label")
        if output.suffix.lower() == ".png" or output.is_file():
            raise PipelineError(f"-o {output}: --prompts writes a folder; give -o FOLDER")
        failed = from_file(model_dir, request, prompts, output, params)
        if failed:
            raise PipelineError(f"{prompts}: {failed} line(s) failed (above); the rest are written")
        return f"wrote {output}"
    if output.is_dir() or output.suffix.lower() != ".png":
        what, example = "not a .png file name", output.with_suffix(".png")
        if output.is_dir():
            what, example = "a directory", output / "generated.png"
        raise PipelineError(f"-o {output}: {what}; give the PNG to write, e.g. -o {example}")
    return f"wrote {one(model_dir, request, output, params)}"
