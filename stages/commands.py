"""Which stage module runs `t2i COMMAND ARG`: the table the CLI dispatches on.

scripts/stage_deps.py reads it too (it derives each DVC stage's code deps from the imports of
the module named here), without importing the CLI. No stage module imports this one. A named
model's trainer follows from its entry's ``data``, its evaluator from its kind of evaluation
(params.yaml ``models:``; pipeline/config.py ``ModelEntry``).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import load_params
from pipeline.errors import PipelineError


def choose(table: dict, name: str, what: str):
    """``table[name]``, or a one-line error naming what was expected."""
    if name not in table:
        raise PipelineError(f"unknown {what} {name!r}; expected one of {sorted(table)}")
    return table[name]


TRAINERS = {"fmnist": "stages.train", "coco": "stages.train_coco"}
EVALUATORS = {
    "fmnist_label": "stages.evaluate",
    "fmnist_text": "stages.evaluate_text",
    "coco": "stages.coco_evaluate",
}
STAGE_MODULES: dict[str, str | dict[str, str]] = {
    "download": {"fmnist": "stages.download_fmnist", "coco": "stages.coco_download"},
    "pack": {"coco": "stages.coco_pack"},
    "embed": "stages.embed",
    "judge": "stages.judge",
    "cas": "stages.cas",
}
WHAT = {"download": "dataset", "pack": "dataset"}


def stage_module(command: str, arg: str | None = None, params: Path = Path("params.yaml")) -> str:
    """The module name of the stage that `t2i COMMAND ARG` runs; ``params`` names the models."""
    if command in ("train", "evaluate"):
        entry = load_params(params).model(arg)
        if command == "train":
            return TRAINERS[entry.data]
        return EVALUATORS[entry.evaluation]
    entry = choose(STAGE_MODULES, command, "stage command")
    return entry if isinstance(entry, str) else choose(entry, arg, WHAT[command])
