"""The default DVC remote: push from one clone, pull into a fresh one, generate without training."""

import json
import subprocess

import pytest
from PIL import Image

from .conftest import copy_repo, dvc, root_stages, run_env, stages_run

pytestmark = pytest.mark.e2e


def git(repo, *args):
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def test_a_fresh_clone_pulls_every_output_and_generates_without_retraining(
    finished_root_run, tmp_path
):
    repo_copy = copy_repo(finished_root_run.repo, tmp_path)  # the whole Fashion-MNIST path, run
    assert stages_run(finished_root_run.output) == root_stages(repo_copy)
    assert dvc(repo_copy, "remote", "default").strip() == "storage"
    assert dvc(repo_copy, "remote", "list").split()[0] == "storage"
    git(repo_copy, "add", "-A")
    git(repo_copy, "commit", "-qm", "a finished run")
    dvc(repo_copy, "push")
    storage = tmp_path / "t2i-cvae-dvc-storage"  # beside the repo, where the default points
    assert any(p.is_file() for p in storage.rglob("*"))

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo_copy), str(clone))
    model = "models/fmnist_text/model.safetensors"
    assert not (clone / model).exists()
    dvc(clone, "pull", "dvc.yaml")  # what the root pipeline made (coco/dvc.yaml never ran)
    assert (clone / model).read_bytes() == (repo_copy / model).read_bytes()
    assert json.loads(dvc(clone, "status", "--json", "dvc.yaml")) == {}
    assert stages_run(dvc(clone, "repro")) == set()  # nothing retrains

    for args in (
        ["--model", "models/fmnist_text", "--caption", "white running shoes"],
        ["--model", "models/fmnist_label", "--label", "sneaker"],
    ):
        out = clone / "generated.png"
        run = subprocess.run(
            ["t2i", "generate", *args, "-n", "8", "-o", str(out)],
            cwd=clone,
            env=run_env(clone),
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr
        assert Image.open(out).size == (8 * 58 + 2, 58 + 2)
        out.unlink()
