"""No leftovers: temp files live beside their target, a rerun removes what a killed run left,
and DVC never records one inside an output."""

import os
import signal
import subprocess
import time

import pytest
import yaml

from pipeline.atomic import remove_stale_temps, write_bytes

from .coco_fixture import loopback_download, make_coco_fixture, serve
from .conftest import REPO, run_env
from .test_http import trickle


def test_an_atomic_write_removes_what_a_killed_write_of_the_same_file_left(tmp_path):
    left = tmp_path / ".state.bin.k1ll3d_x.tmp"  # as atomic_path names its temp files
    other = tmp_path / ".state.bin.old.k1ll3d_x.tmp"  # the temp of another file, state.bin.old
    left.write_bytes(b"half")
    other.write_bytes(b"someone else's")
    write_bytes(tmp_path / "state.bin", b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "state.bin"]
    assert remove_stale_temps(tmp_path) == [other]
    assert [p.name for p in tmp_path.iterdir()] == ["state.bin"]


def test_a_killed_coco_fetch_leaves_temps_only_in_the_store_and_a_rerun_removes_them(
    tmp_path, http_server
):
    fixture = make_coco_fixture(tmp_path / "coco", http_server.url)
    serve(http_server, fixture)
    slow = f"/train2014/COCO_train2014_{1:012d}.jpg"
    http_server.routes[slow] = [trickle(fixture.files[slow], 0.05), (200, fixture.files[slow])]
    work, tmpdir = tmp_path / "work", tmp_path / "TMPDIR"
    tmpdir.mkdir()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["download"]["coco"].update(
        **loopback_download(http_server.url),
        workers=1,
        retries=0,
        max_failure_rate=0.9,
        subsets={"train": {"split": "train2014", "num_images": None, "seed": 0}},
    )
    work.mkdir()
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**run_env(), "TMPDIR": str(tmpdir)}
    store = work / "data/coco/store/train2014"
    proc = subprocess.Popen(
        ["t2i", "download", "coco"],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not list(store.glob(".*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert [p.name for p in store.glob(".*.tmp")][0].startswith(".COCO_train2014_000000000001")
    assert list(tmpdir.iterdir()) == []

    result = subprocess.run(
        ["t2i", "download", "coco"], cwd=work, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    everything = [p for p in (work / "data").rglob("*") if p.is_file()]
    assert [p for p in everything if p.name.endswith(".tmp")] == []
    assert (store / "COCO_train2014_000000000001.jpg").read_bytes() == fixture.files[slow]


@pytest.mark.e2e
def test_dvc_never_records_a_temp_file_left_in_a_persisted_output(tmp_path):
    """The repository's .dvcignore keeps atomic_path's temp files out of what DVC hashes, as
    in models/<name>/epochs/ (persist: true), where a killed run's temp file would stay."""
    project = tmp_path / "project"
    project.mkdir()
    (project / ".dvcignore").write_text((REPO / ".dvcignore").read_text())
    write = "from pathlib import Path; Path('state').mkdir(exist_ok=True); "
    write += "Path('state/train_state.bin').write_bytes(b'epoch 3')"
    stage = {"cmd": f'python -c "{write}"', "outs": [{"state": {"persist": True, "cache": False}}]}
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": stage}}))

    def dvc(*args):
        done = subprocess.run(
            ["dvc", *args], cwd=project, env=run_env(), capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    dvc("init", "-q")
    dvc("repro")
    clean = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["train"]["outs"][0]

    (project / "state" / ".train_state.bin.k1ll3d_x.tmp").write_bytes(b"half of epoch 4")
    assert "up to date" in dvc("status")  # the leftover does not change the output
    dvc("repro", "--force")  # a rerun (it finds the leftover still there)
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["train"]["outs"][0]
    assert lock == clean and lock["nfiles"] == 1
