"""One writer per model (issue 25): `t2i train`, `evaluate` and `cas` hold the model's lock, a
second writer is refused in one line naming the holder's pid, and an orphan left by a kill -9
of `dvc repro` keeps the lock until it dies, so no second run writes the same files."""

import contextlib
import os
import signal
import subprocess
import time

import pytest
import yaml

from pipeline.lock import lock_holder

from .conftest import copy_repo, run_env


def _start_long_training(finished_root_run, tmp_path, *command, **popen):
    """A copy of the small run with fmnist_label set to train for a long time (each epoch is a
    second or two), and ``command`` started in it: (the repo, the process)."""
    repo = copy_repo(finished_root_run.repo, tmp_path)
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["models"]["fmnist_label"]["train"]["epochs"] = 500
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    return repo, subprocess.Popen(command, cwd=repo, env=run_env(repo), **quiet, **popen)


def _wait_for_holder(folder, process, timeout=120.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        holder = lock_holder(folder)
        if holder is not None:
            return holder
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    raise AssertionError(f"{folder}: nobody took the lock in {timeout} s")


def _t2i(repo, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["t2i", *args], cwd=repo, env=run_env(repo), capture_output=True, text=True, timeout=300
    )


@pytest.mark.e2e
def test_a_second_writer_is_refused_naming_the_first_and_the_lock_dies_with_it(
    finished_root_run, tmp_path
):
    repo, first = _start_long_training(finished_root_run, tmp_path, "t2i", "train", "fmnist_label")
    try:
        holder = _wait_for_holder(repo / "models/fmnist_label", first)
        assert f"(pid {first.pid})" in holder and "t2i train fmnist_label" in holder
        for command in (["train", "fmnist_label"], ["evaluate", "fmnist_label"]):
            second = _t2i(repo, *command)
            lines = second.stderr.strip().splitlines()
            assert second.returncode == 1 and len(lines) == 1, second.stderr
            assert "is writing this model now" in lines[0] and f"pid {first.pid}" in lines[0]
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        assert lock_holder(repo / "models/fmnist_label") is None  # it died with its process
        # a killed run published no curves beside a model it did not write
        assert not (repo / "metrics/fmnist_label/train/metrics.json").exists()
    finally:
        if first.poll() is None:
            first.kill()


@pytest.mark.e2e
def test_an_orphan_of_a_killed_dvc_repro_keeps_the_next_run_out(finished_root_run, tmp_path):
    repo, dvc = _start_long_training(  # a session of its own: its t2i child outlives it
        finished_root_run, tmp_path, "dvc", "repro", "train@fmnist_label", start_new_session=True
    )
    try:
        holder = _wait_for_holder(repo / "models/fmnist_label", dvc)
        orphan = int(holder.rsplit("pid ", 1)[1].rstrip(")"))
        os.kill(dvc.pid, signal.SIGKILL)  # kill -9 of dvc repro alone
        dvc.wait(timeout=30)
        assert lock_holder(repo / "models/fmnist_label") == holder  # the orphan still writes
        again = _t2i(repo, "train", "fmnist_label")
        assert again.returncode == 1 and f"pid {orphan}" in again.stderr, again.stderr
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(dvc.pid, signal.SIGKILL)  # the orphan too
