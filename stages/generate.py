"""`t2i generate`: PNG grids from any trained model folder through the Python API
(pipeline/api.py), so that a seed gives the same pixels here and in a notebook. A label
model takes --label, a text model --caption; --negative / --negative-label steer guidance
away from a condition (they need --guidance > 0); --sampler expost draws z from a label
model's ex-post latent density instead of its prior. --prompts FILE -o FOLDER draws every line
of FILE into FOLDER/NNNN-<slug>.png and FOLDER/grid.png; a bad line is reported by its
number, the others are still written, and the command then fails."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from pipeline.api import (
    Model,
    check_sampling,
    grid,
    load,
    pick_condition,
    prompt_file_name,
    read_prompts,
)
from pipeline.errors import PipelineError
from pipeline.figures import save_png


@dataclass(frozen=True)
class Request:
    """What the command line asked for; ``sampling``: guidance, temperature, seed and
    sampler."""

    label: str | None
    caption: str | None
    negative: str | None
    negative_label: str | None
    n: int
    columns: int
    sampling: dict


def _sampling(model: Model, request: Request) -> dict:
    """The sampling arguments of ``model.generate``, checked before anything is written: the
    negative prompt, and for sampler expost the model's ex-post density (read once)."""
    if request.sampling.get("sampler") == "expost":
        model.density()
    w = request.sampling["guidance"]
    away = pick_condition(model, request.negative, request.negative_label, "negative", w)
    return {**request.sampling, "negative": away}


def from_file(model: Model, request: Request, prompts: list, folder: Path, source: Path) -> int:
    """Every prompt of the file drawn into ``folder``; returns how many lines failed."""
    model.check_count(request.n, len(prompts))
    sampling = _sampling(model, request)
    folder.mkdir(parents=True, exist_ok=True)
    drawn, labels, failed = [], [], 0
    for number, text in prompts:
        where = f"{source} line {number}"
        try:
            condition = model.condition(text, where)
        except PipelineError as exc:
            failed, message = failed + 1, str(exc)
            typer.echo(
                f"error: {message if message.startswith(where) else f'{where}: {message}'}",
                err=True,
            )
            continue
        images = model.generate([condition], n=request.n, **sampling)
        save_png(grid(images, request.columns), folder / prompt_file_name(number, condition.text))
        drawn, labels = drawn + images, [*labels, f"{number}: {condition.text[:40]}"]
    if drawn:  # one row per line that was drawn
        save_png(grid(drawn, request.n, labels), folder / "grid.png")
    return failed


def run(model_dir: Path, request: Request, prompts: Path | None, output: Path, params) -> str:
    """The command: the options checked before any model is read, then one grid or a folder."""
    check_sampling(**request.sampling)
    if prompts is not None:
        lines = read_prompts(prompts)  # bounded and checked before any model is read
        failed = from_file(load(model_dir, params), request, lines, output, prompts)
        if failed:
            raise PipelineError(f"{prompts}: {failed} line(s) failed (above); the rest are written")
        return f"wrote {len(lines)} prompts into {output}"
    model = load(model_dir, params)
    condition = pick_condition(model, request.caption, request.label, "prompt")
    images = model.generate([condition], n=request.n, **_sampling(model, request))
    save_png(grid(images, request.columns), output)
    return f"wrote {output}"
