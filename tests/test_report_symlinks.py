"""`t2i report` inlines only what the pipeline wrote: a symlink committed to git (to a file
outside the repository) is refused with one line, and the target's bytes reach no page."""

import base64
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import PipelineError
from pipeline.report import read_owned, read_png

from .conftest import run_env

REPO = Path(__file__).resolve().parents[1]
SECRET = b"-----BEGIN OPENSSH PRIVATE KEY----- hunter2-do-not-share"


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def committed_run(tmp_path: Path, plant) -> Path:
    """A git repository with a finished run's figure and metrics, plus what ``plant`` adds,
    all committed; returned as a fresh clone (git recreates the committed symlinks)."""
    origin = tmp_path / "origin"
    (origin / "reports/fmnist_label").mkdir(parents=True)
    (origin / "metrics/fmnist_label").mkdir(parents=True)
    pixels = np.full((20, 30, 3), 90, np.uint8)
    Image.fromarray(pixels).save(origin / "reports/fmnist_label/grid.png")
    for name in ("metrics/fmnist_label/eval.json", "params.yaml"):  # valid files of a real run
        (origin / name).write_bytes((REPO / name).read_bytes())
    plant(origin)
    git(origin, "init", "-q")
    git(origin, "add", "-A")
    git(origin, "commit", "-qm", "a run")
    git(tmp_path, "clone", "-q", str(origin), "clone")
    return tmp_path / "clone"


def report(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["t2i", "report", "fmnist_label"], cwd=repo, env=run_env(), capture_output=True, text=True
    )


def leaked(repo: Path) -> bool:
    pages = [p.read_bytes() for p in repo.rglob("*.html")]
    forms = [SECRET, base64.b64encode(SECRET), b"hunter2"]
    return any(form in page for page in pages for form in forms)


@pytest.mark.parametrize(
    ("link", "target_name", "secret"),
    [
        ("reports/fmnist_label/zz.png", "id_rsa", SECRET),
        ("metrics/fmnist_label/eval.json", "leak.json", json.dumps({"k": SECRET.decode()})),
        ("metrics/fmnist_label/frontier.json", "f.json", json.dumps([{"k": SECRET.decode()}])),
        ("metrics/fmnist_label/train/metrics.json", "m.json", json.dumps({"k": SECRET.decode()})),
    ],
)
def test_a_committed_symlink_is_refused_with_one_line_and_nothing_is_inlined(
    tmp_path, link, target_name, secret
):
    outside = tmp_path / "home"
    outside.mkdir()
    target = outside / target_name
    target.write_bytes(secret if isinstance(secret, bytes) else secret.encode())

    def plant(origin):
        (origin / link).parent.mkdir(parents=True, exist_ok=True)
        (origin / link).unlink(missing_ok=True)
        (origin / link).symlink_to(target)

    repo = committed_run(tmp_path, plant)
    assert (repo / link).is_symlink()  # git stored and recreated the symlink
    result = report(repo)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"error: {link}: {link} is a symlink; a report inlines only files the pipeline "
        "wrote under reports/ and metrics/: remove it and rerun the stage that writes it "
        "(dvc repro)"
    ]
    assert not (repo / "reports/fmnist_label/report.html").exists() and not leaked(repo)

    (repo / link).unlink()  # without it (and with eval.json as the run wrote it), it reports
    if link.endswith("eval.json"):
        (repo / link).write_bytes((REPO / link).read_bytes())
    assert report(repo).returncode == 0 and not leaked(repo)


def test_a_symlinked_report_folder_and_a_fake_png_are_refused(tmp_path):
    outside = tmp_path / "home"
    outside.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(outside / "a.png")

    def plant(origin):
        (origin / "reports/fmnist_label/notes.png").write_bytes(SECRET)

    repo = committed_run(tmp_path, plant)
    result = report(repo)
    assert result.returncode == 1 and "notes.png: not a PNG (no PNG signature)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not leaked(repo)

    (repo / "reports/fmnist_label/notes.png").unlink()
    (repo / "reports/fmnist_label/grid.png").unlink()
    (repo / "reports/fmnist_label").rmdir()
    (repo / "reports/fmnist_label").symlink_to(outside, target_is_directory=True)
    result = report(repo)
    assert result.returncode == 1
    assert "reports/fmnist_label/a.png: reports/fmnist_label is a symlink" in result.stderr


def test_reads_are_bounded_and_stay_under_their_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/big.json").write_bytes(b"1" * 101)
    assert read_owned(Path("metrics/big.json"), (Path("metrics"),), 101) == b"1" * 101
    with pytest.raises(PipelineError, match=r"larger than report.max_file_bytes \(100 bytes\)"):
        read_owned(Path("metrics/big.json"), (Path("metrics"),), 100)
    with pytest.raises(PipelineError, match="not under reports/"):
        read_png(Path("metrics/big.json"), (Path("reports"),), 1000)
    with pytest.raises(PipelineError, match="not under metrics/"):
        read_owned(Path("metrics/../params.yaml"), (Path("metrics"),), 1000)
    (tmp_path / "metrics/folder.json").mkdir()
    os.mkfifo(tmp_path / "metrics/fifo.json")  # would block a plain read forever
    for name in ("folder.json", "fifo.json"):
        with pytest.raises(PipelineError, match=f"metrics/{name}: not a regular file"):
            read_owned(Path("metrics") / name, (Path("metrics"),), 1000)
