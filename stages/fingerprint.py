"""The resume fingerprint of a training stage: its declared DVC deps (code and data) and params.

Whatever makes DVC rerun a training stage, a code or data dep or a param other than those of
RESUMABLE, also makes its training start afresh; raising ``epochs`` alone continues it. The
deps are read from DVC's own view of dvc.yaml and coco/dvc.yaml, so there is one list.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel
from torch import nn

from pipeline.errors import PipelineError
from pipeline.train import inputs_digest, run_fingerprint


def declared_deps(cmd: str) -> list[Path]:
    """The deps, params aside, of the one DVC stage whose command is ``cmd``."""
    from dvc.dependency.param import ParamsDependency
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        with Repo() as repo:
            stages = [s for s in repo.index.stages if s.cmd == cmd]
    except NotDvcRepoError:
        raise PipelineError(f"`{cmd}`: run it inside the repository (no DVC repo here)") from None
    if len(stages) != 1:
        raise PipelineError(
            f"`{cmd}`: {len(stages)} DVC stages run it; a training stage's resume fingerprint "
            "needs exactly one (dvc.yaml, coco/dvc.yaml)"
        )
    deps = [d for d in stages[0].deps if not isinstance(d, ParamsDependency)]
    return [Path(os.path.relpath(d.fs_path)) for d in deps]


# Keys that change no trained weight: raising ``epochs`` continues a run; ``keep_epochs`` is
# checked against the kept files themselves (pipeline/train.py); the rest say when to stop,
# or (``frontier``) set other classifiers of the stage.
RESUMABLE = {
    "epochs",
    "frontier",
    "keep_epochs",
    "max_nonfinite_steps",
    "max_nonfinite_share",
    "min_accuracy",
}


def training_fingerprint(
    cmd: str, model: nn.Module, params: BaseModel, extra: dict | None = None
) -> str:
    """``params``: the stage's params section; the keys of RESUMABLE are left out. ``extra``:
    what else sets the weights (CAS: the guidance its samples were drawn with)."""
    blob = params.model_dump(exclude=RESUMABLE) | (extra or {})
    if blob.get("lr_schedule") == "onecycle":  # the schedule spans all epochs: no extending
        blob["epochs"] = params.model_dump()["epochs"]
    return run_fingerprint(model, blob, inputs=inputs_digest(declared_deps(cmd)))
