"""`t2i report MODEL`: reports/<model>/report.html from the run's figures, metrics and params."""

import json
from pathlib import Path

from pipeline.config import load_params
from pipeline.errors import PipelineError
from pipeline.models.registry import model_spec
from pipeline.report import write_report
from stages.layout import METRICS, REPORTS


def run(model: str, params_path: Path, output: Path | None = None) -> Path:
    spec = model_spec(model)
    params = load_params(params_path)
    figures = sorted((REPORTS / model).glob("*.png"))
    metric_files = sorted((METRICS / model).glob("**/metrics.json")) + sorted(
        (METRICS / model).glob("*.json")
    )
    if not figures and not metric_files:
        raise PipelineError(f"no figures in {REPORTS / model} and no metrics in "
                            f"{METRICS / model}: run its stages first (dvc repro)")  # fmt: skip
    metrics = {}
    for path in metric_files:
        try:
            metrics[str(path)] = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise PipelineError(f"{path}: not a readable metrics JSON ({exc}); rerun the stage "
                                "that writes it (dvc repro) or delete it") from None  # fmt: skip
    sections = {spec.train_section: spec.train_params(params).model_dump(by_alias=True)}
    if spec.evaluate_type is not None:
        sections[f"evaluate.{model}"] = spec.evaluate_params(params).model_dump(by_alias=True)
    output = output or REPORTS / model / "report.html"
    write_report(output, f"t2i-cvae: {model}", figures, metrics, sections)
    return output
