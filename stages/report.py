"""`t2i report MODEL`: reports/<model>/report.html from the run's figures, training curves,
metrics and params. `t2i report --all`: that page for every model with metrics, and
reports/index.html comparing them. Not DVC stages: a page is a view of committed outputs.

It inlines only files the pipeline wrote (pipeline/report.py read_owned: never a symlink), and
reads each metrics file through its schema (pipeline/metrics.py), the eval.json's chosen by the
model's params entry: a bad file is one line naming it and the key, and nothing is written."""

import os
from pathlib import Path

from pipeline.atomic import write_bytes
from pipeline.config import load_params
from pipeline.errors import PipelineError
from pipeline.metrics import FrontierRows, Live, eval_schema, parse_metrics
from pipeline.report import (
    per_class_series,
    read_curves,
    read_owned,
    read_png,
    render_index,
    write_report,
)
from stages.layout import METRICS, REPORTS, live_dir


def _metric_files(model: str, entry) -> dict[str, tuple[Path, type]]:
    """{name: (path, schema)} of the metrics files the model's stages write and that exist
    (or stand there as a symlink, which reading refuses). Nothing else is read."""
    files = {
        "eval.json": (METRICS / model / "eval.json", eval_schema(entry)),
        "frontier.json": (METRICS / model / "frontier.json", FrontierRows),
        "train/metrics.json": (live_dir(model) / "metrics.json", Live),
    }
    return {
        name: (path, schema)
        for name, (path, schema) in files.items()
        if schema is not None and (path.is_symlink() or path.exists())
    }


def _views(model: str, entry, max_bytes: int) -> tuple[dict, dict, dict, list]:
    """(validated metrics by file, training curves, per-class accuracy series, frontier rows),
    with eval.json first."""
    metrics = {
        name: parse_metrics(read_owned(path, (METRICS,), max_bytes), str(path), schema)
        for name, (path, schema) in _metric_files(model, entry).items()
    }
    frontier = metrics.pop("frontier.json", None)  # a chart, not a table: so is eval.json's
    curves = read_curves(live_dir(model) / "plots" / "metrics", (METRICS,), max_bytes)
    per_class = per_class_series(metrics.get("eval.json"))
    return metrics, curves, per_class, frontier.root if frontier else []


def run(model: str, params_path: Path, output: Path | None = None) -> Path:
    params = load_params(params_path)
    entry = params.model(model)  # an unknown name is one line naming the entries
    limit = params.report.max_file_bytes
    figures = {
        p.name: read_png(p, (REPORTS,), limit) for p in sorted((REPORTS / model).glob("*.png"))
    }
    metrics, curves, per_class, frontier = _views(model, entry, limit)
    if not figures and not metrics:
        raise PipelineError(
            f"no figures in {REPORTS / model} and no metrics in "
            f"{METRICS / model}: run its stages first (dvc repro)"
        )
    sections = {f"models.{model}": entry.model_dump(by_alias=True)}
    output = output or REPORTS / model / "report.html"
    metrics = {str(METRICS / model / name): values for name, values in metrics.items()}
    title = f"t2i-cvae: {model}"
    write_report(output, title, figures, metrics, sections, curves, per_class, frontier)
    return output


def run_all(params_path: Path, output: Path | None = None) -> Path:
    """Every model of params.yaml with a metrics file, in the order of its entries."""
    params = load_params(params_path)
    models = [m for m, entry in params.models.items() if _metric_files(m, entry)]
    if not models:
        raise PipelineError(
            f"no metrics of any model ({', '.join(params.models)}) under "
            f"{METRICS}: run the stages first (dvc repro)"
        )
    output = output or REPORTS / "index.html"
    limit = params.report.max_file_bytes
    views = {m: _views(m, params.models[m], limit) for m in models}  # all read before writing
    links = {}
    for model in models:
        page = run(model, params_path)
        links[model] = Path(os.path.relpath(page, output.parent)).as_posix()
    metrics, curves, per_class, frontiers = ({m: v[i] for m, v in views.items()} for i in range(4))
    page = render_index("t2i-cvae: models compared", metrics, links, curves, per_class, frontiers)
    write_bytes(output, page.encode())
    return output
