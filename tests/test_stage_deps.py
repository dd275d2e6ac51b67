"""Code deps by construction: each stage declares every module it imports, and only those."""

import importlib.util
import json
from pathlib import Path

import pytest

from .conftest import REPO, dvc

spec = importlib.util.spec_from_file_location("stage_deps", REPO / "scripts/stage_deps.py")
stage_deps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stage_deps)


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def test_every_imported_module_is_a_declared_dep_of_its_stage():
    stages = stage_deps.declared_stages(REPO)
    assert {s.path_in_repo for s in stages} == {"dvc.yaml", "coco/dvc.yaml"}
    missing = []
    for stage in stages:
        imported = stage_deps.code_deps(stage_deps.entry_module(stage.cmd), REPO)
        assert any(p.startswith("stages/") for p in imported), stage_deps.address(stage)
        declared = stage_deps.declared_code_deps(stage, REPO)
        missing += [
            f"{stage_deps.address(stage)}: {p}" for p in imported if not covered(p, declared)
        ]
    assert missing == [], "run `python scripts/stage_deps.py` to regenerate the code deps"


def test_no_stage_declares_code_it_does_not_import():
    assert stage_deps.drift(REPO) == [], "run `python scripts/stage_deps.py`"


def test_no_declared_code_dep_is_an_empty_file():
    """DVC warns "'pipeline/data/__init__.py' is empty." for every empty dep on every run: a
    package's __init__.py, a dep of each stage that imports the package, says what it holds."""
    empty = {
        path
        for stage in stage_deps.declared_stages(REPO)
        for path in stage_deps.declared_code_deps(stage, REPO)
        if (REPO / path).is_file() and (REPO / path).stat().st_size == 0
    }
    assert empty == set()


def test_import_walk_follows_lazy_relative_and_named_imports(tmp_path):
    files = {
        "pipeline/__init__.py": "",
        "pipeline/a.py": "def f():\n    from pipeline import b\n",  # inside a function
        "pipeline/b.py": 'CLASSES = {"c": "pipeline.sub.c:Thing"}\n',  # loaded by name
        "pipeline/sub/__init__.py": "",
        "pipeline/sub/c.py": "from . import d\nfrom ..e import VALUE\n",  # relative
        "pipeline/sub/d.py": "import numpy\n",  # outside the project: not a dep
        "pipeline/e.py": 'VALUE = "pipeline."\n',
        "pipeline/unused.py": "",
        "stages/__init__.py": "",
        "stages/s.py": "import pipeline.a\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert stage_deps.code_deps("stages.s", tmp_path) == sorted(set(files) - {"pipeline/unused.py"})


def record_placeholder_outputs(repo: Path) -> None:
    """Every stage's outputs as placeholders, recorded in dvc.lock by `dvc commit`: DVC's view
    of a finished pipeline without running it (`dvc status` compares deps by their hashes)."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        outs = [Path(o.fs_path) for s in dvc_repo.index.stages for o in s.outs]
    for path in outs:
        folder = path.parent if path.suffix else path  # eval.json, model.safetensors: files
        folder.mkdir(parents=True, exist_ok=True)
        (path if path.suffix else path / "placeholder").write_text("placeholder\n")
    dvc(repo, "commit", "--force")


def stale_stages(repo: Path) -> set[str]:
    return set(json.loads(dvc(repo, "status", "--json")))


def assert_each_edit_marks(repo: Path, expected: dict[str, set[str]]) -> None:
    """Edit each module in turn: `dvc status` names exactly its expected stages; undone, none."""
    for module, stages in expected.items():
        path = repo / module
        original = path.read_text()
        path.write_text(original + "# an edit\n")
        assert stale_stages(repo) == stages, module
        path.write_text(original)
    assert stale_stages(repo) == set()


@pytest.mark.e2e
def test_editing_a_module_marks_exactly_the_stages_that_import_it(repo_copy):
    record_placeholder_outputs(repo_copy)
    assert stale_stages(repo_copy) == set()
    importers = {
        stage_deps.address(s): stage_deps.code_deps(stage_deps.entry_module(s.cmd), repo_copy)
        for s in stage_deps.declared_stages(repo_copy)
    }
    expected = {  # module -> the stages that must rerun
        "pipeline/data/archive.py": {"coco/dvc.yaml:coco_download"},  # one stage only
        "pipeline/data/fmnist.py": {
            s for s, files in importers.items() if "pipeline/data/fmnist.py" in files
        },
        "pipeline/data/http.py": {
            s for s, files in importers.items() if "pipeline/data/http.py" in files
        },
        "pipeline/report.py": set(),  # `t2i report` is no stage
    }
    # The example: pixel loading reaches every model that trains on Fashion-MNIST.
    assert {
        "judge",
        "train@fmnist_label",
        "evaluate@fmnist_label",
        "train_text@fmnist_text",
        "evaluate_text@fmnist_text",
    } <= expected["pipeline/data/fmnist.py"]
    assert not {"embed@minilm-fmnist", "download_fmnist"} & expected["pipeline/data/fmnist.py"]
    # The HTTP client reaches the stages that download, never those that train or evaluate
    # on Fashion-MNIST (their pixels come from pipeline/data/fmnist.py, their captions from
    # captions/fmnist.json).
    assert {"download_fmnist", "coco/dvc.yaml:coco_download"} <= expected["pipeline/data/http.py"]
    assert not expected["pipeline/data/http.py"] & expected["pipeline/data/fmnist.py"]
    assert_each_edit_marks(repo_copy, expected)


FMNIST_OF = {  # model -> the root stages that run it
    m: {f"{t}@{m}" for t in (("train", "evaluate", "cas") if "text" not in m else ())}
    | {f"{t}@{m}" for t in (("train_text", "evaluate_text", "cas_text") if "text" in m else ())}
    for m in ("fmnist_label", "fmnist_conv", "fmnist_text", "fmnist_text_prior")
}
COCO_OF = {
    m: {f"coco/dvc.yaml:train@{m}", f"coco/dvc.yaml:evaluate@{m}"} for m in ("coco_clip", "coco_t5")
}
SCORED_BY_JUDGE = {  # the judge itself, the stages that load it, and CAS (its architecture)
    "judge",
    "cas_real",
    *(s for m, stages in FMNIST_OF.items() for s in stages if not s.startswith("train")),
}


@pytest.mark.e2e
def test_a_model_edit_reruns_only_the_stages_of_that_model(repo_copy):
    """The registry imports a model only when asked: real `dvc status` after editing one model
    file names exactly the stages that run it (issue 19)."""
    record_placeholder_outputs(repo_copy)
    assert stale_stages(repo_copy) == set()
    expected = {
        "pipeline/models/cvae_clip.py": COCO_OF["coco_clip"],
        "pipeline/models/cvae_gated.py": COCO_OF["coco_t5"],
        "pipeline/models/cvae_mlp.py": FMNIST_OF["fmnist_label"] | FMNIST_OF["fmnist_text"],
        "pipeline/models/cvae_prior.py": FMNIST_OF["fmnist_conv"] | FMNIST_OF["fmnist_text_prior"],
        "pipeline/models/judge.py": SCORED_BY_JUDGE,
    }
    assert len(SCORED_BY_JUDGE) == 10 and "train@fmnist_label" not in SCORED_BY_JUDGE
    assert_each_edit_marks(repo_copy, expected)
