"""Which stage module runs `t2i COMMAND ARG`: the table the CLI dispatches on.

scripts/stage_deps.py reads it too (it derives each DVC stage's code deps from the imports of
the module named here), without importing the CLI. No stage module imports this one.
"""

from __future__ import annotations

from pipeline.errors import PipelineError
from pipeline.models.registry import GENERATIVE as MODELS


def choose(table: dict, name: str, what: str):
    """``table[name]``, or a one-line error naming what was expected."""
    if name not in table:
        raise PipelineError(f"unknown {what} {name!r}; expected one of {sorted(table)}")
    return table[name]


# `t2i COMMAND ARG` -> the stage module that runs it. scripts/stage_deps.py derives each DVC
# stage's code deps from the imports of the module named here, so dvc.yaml follows what it runs.
# A model's trainer follows from the data it trains on, its evaluator from its evaluation.
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
    "train": {name: TRAINERS[spec.data] for name, spec in MODELS.items()},
    "evaluate": {name: EVALUATORS[spec.evaluation] for name, spec in MODELS.items()},
}
WHAT = {"download": "dataset", "pack": "dataset", "train": "model", "evaluate": "model"}


def stage_module(command: str, arg: str | None = None) -> str:
    """The module name of the stage that `t2i COMMAND ARG` runs."""
    entry = choose(STAGE_MODULES, command, "stage command")
    return entry if isinstance(entry, str) else choose(entry, arg, WHAT[command])
