"""An evaluate stage's metrics: the stage holds the model's lock and clears the files it
replaces before it starts; its metrics are checked by their schemas before the figures are
drawn, and written last, after them: a failed or killed run leaves none."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from pipeline.finite import require_finite
from pipeline.lock import model_lock
from pipeline.metrics import FrontierRows, validate_metrics, write_metrics
from stages.layout import METRICS, model_dir

EVAL_FILES = ("eval.json", "frontier.json")


@contextlib.contextmanager
def evaluating(name: str) -> Iterator[None]:
    """Hold ``models/<name>``'s lock; the last run's eval.json and frontier.json go first."""
    with model_lock(model_dir(name), f"t2i evaluate {name}"):
        for stale in EVAL_FILES:
            (METRICS / name / stale).unlink(missing_ok=True)
        yield


def checked(name: str, metrics: dict, frontier: list[dict], schema) -> tuple:
    """(eval.json, frontier.json) of ``name`` validated by their schemas, nothing written."""
    ev_path, rows_path = (str(METRICS / name / file) for file in EVAL_FILES)
    ev = validate_metrics(require_finite(metrics, ev_path), ev_path, schema, "nothing written")
    rows = require_finite(frontier, rows_path)
    return ev, validate_metrics(rows, rows_path, FrontierRows, "nothing written")


def write(name: str, files: tuple) -> None:
    """Write what :func:`checked` returned: the frontier, then eval.json, last of all."""
    ev, rows = files
    write_metrics(METRICS / name / "frontier.json", rows)
    write_metrics(METRICS / name / "eval.json", ev)
