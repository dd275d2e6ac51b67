"""`t2i report MODEL`: reports/<model>/report.html from the run's figures, training curves,
metrics and params. `t2i report --all`: that page for every model with metrics, and
reports/index.html comparing them. Not DVC stages: a page is a view of committed outputs.
It inlines only files the pipeline wrote (pipeline/report.py read_owned): never a symlink."""

import os
from pathlib import Path

from pipeline.atomic import write_bytes
from pipeline.config import load_params
from pipeline.errors import PipelineError
from pipeline.jsonfile import parse_json
from pipeline.models.registry import GENERATIVE, model_spec
from pipeline.report import (
    per_class_series,
    read_curves,
    read_owned,
    read_png,
    render_index,
    write_report,
)
from stages.layout import METRICS, REPORTS, live_dir


def _metric_files(model: str) -> list[Path]:
    folder = METRICS / model
    return sorted(folder.glob("*.json")) + sorted(folder.glob("**/metrics.json"))


def _read_metrics(model: str, max_bytes: int) -> dict[str, dict]:
    """{path relative to metrics/<model>: its JSON}, with eval.json first."""
    metrics = {}
    for path in _metric_files(model):
        hint = "rerun the stage that writes it (dvc repro) or delete it"
        data = read_owned(path, (METRICS,), max_bytes)
        key = path.relative_to(METRICS / model).as_posix()
        metrics[key] = parse_json(data, str(path), "metrics JSON", hint)
    return metrics


def _views(model: str, max_bytes: int) -> tuple[dict, dict, dict, list]:
    """(metrics, training curves, per-class accuracy series, guidance frontier rows)."""
    metrics = _read_metrics(model, max_bytes)
    frontier = metrics.pop("frontier.json", [])  # a chart, not a table: so is eval.json's
    metrics.get("eval.json", {}).pop("frontier", None)
    curves = read_curves(live_dir(model) / "plots" / "metrics", (METRICS,), max_bytes)
    return metrics, curves, per_class_series(metrics.get("eval.json", {})), frontier


def run(model: str, params_path: Path, output: Path | None = None) -> Path:
    spec = model_spec(model)
    params = load_params(params_path)
    limit = params.report.max_file_bytes
    figures = {
        p.name: read_png(p, (REPORTS,), limit) for p in sorted((REPORTS / model).glob("*.png"))
    }
    metrics, curves, per_class, frontier = _views(model, limit)
    if not figures and not metrics:
        raise PipelineError(
            f"no figures in {REPORTS / model} and no metrics in "
            f"{METRICS / model}: run its stages first (dvc repro)"
        )
    sections = {spec.train_section: spec.train_params(params).model_dump(by_alias=True)}
    if spec.evaluate_type is not None:
        sections[f"evaluate.{model}"] = spec.evaluate_params(params).model_dump(by_alias=True)
    output = output or REPORTS / model / "report.html"
    metrics = {str(METRICS / model / name): values for name, values in metrics.items()}
    title = f"t2i-cvae: {model}"
    write_report(output, title, figures, metrics, sections, curves, per_class, frontier)
    return output


def run_all(params_path: Path, output: Path | None = None) -> Path:
    """Every model of the registry with a metrics file, in registry order."""
    models = [m for m in GENERATIVE if _metric_files(m)]
    if not models:
        raise PipelineError(
            f"no metrics of any model ({', '.join(GENERATIVE)}) under "
            f"{METRICS}: run the stages first (dvc repro)"
        )
    output = output or REPORTS / "index.html"
    limit = load_params(params_path).report.max_file_bytes
    views = {m: _views(m, limit) for m in models}  # read all before writing anything
    links = {}
    for model in models:
        page = run(model, params_path)
        links[model] = Path(os.path.relpath(page, output.parent)).as_posix()
    metrics, curves, per_class, frontiers = ({m: v[i] for m, v in views.items()} for i in range(4))
    page = render_index("t2i-cvae: models compared", metrics, links, curves, per_class, frontiers)
    write_bytes(output, page.encode())
    return output
