"""One writer per model (issue 25): pipeline/lock.py's flock on ``<folder>/.lock``, taken by
real processes. A second writer is refused in one line naming the first's command and pid;
the lock dies with its holder (kill -9 included), but an orphan left running by a killed
parent still holds it. Garbage, symlinks and FIFOs in place of the lock file are one line,
and a symlink's target is never written."""

import fcntl
import os
import signal
import subprocess
import sys

import pytest

from pipeline.errors import PipelineError
from pipeline.lock import LOCK_NAME, lock_holder, model_lock

from .conftest import run_env

HOLD = """
import os, sys
from pathlib import Path
from pipeline.lock import model_lock
with model_lock(Path(sys.argv[1]), sys.argv[2]):
    print("held", os.getpid(), flush=True)
    sys.stdin.read()  # until the test closes stdin (or kills this process)
"""

TRY = """
import sys
from pathlib import Path
from pipeline.errors import PipelineError
from pipeline.lock import model_lock
try:
    with model_lock(Path(sys.argv[1]), sys.argv[2]):
        print("acquired")
except PipelineError as exc:
    print(f"error: {exc}")
"""

ORPHANING_PARENT = """
import subprocess, sys
subprocess.run([sys.executable, "-c", sys.argv[1], *sys.argv[2:]])  # stdin, stdout: ours
"""


def python(script: str, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)], env=run_env(), text=True, **popen
    )


def try_lock(folder, command="t2i train second") -> str:
    """What a second process that asks for the lock prints: 'acquired' or its one error."""
    result = subprocess.run(
        [sys.executable, "-c", TRY, str(folder), command],
        env=run_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stderr == "", result.stderr
    return result.stdout.strip()


def refusal(folder, holder: str) -> str:
    return f"error: {folder}: {holder} is writing this model now; wait for it to finish, or stop it"


def test_a_second_process_is_refused_naming_the_first_until_kill_9_frees_the_lock(tmp_path):
    folder = tmp_path / "models" / "m"
    first = python(HOLD, folder, "t2i train m", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert first.stdout.readline() == f"held {first.pid}\n"
        assert try_lock(folder) == refusal(folder, f"t2i train m (pid {first.pid})")
        assert lock_holder(folder) == f"t2i train m (pid {first.pid})"
    finally:
        first.kill()  # SIGKILL: no finally, no atexit in the holder runs
        first.wait()
    assert first.returncode == -signal.SIGKILL
    assert lock_holder(folder) is None
    assert try_lock(folder) == "acquired"
    assert (folder / LOCK_NAME).is_file()  # the lock file stays; only its flock went


def test_an_orphan_left_by_a_killed_parent_still_holds_the_lock(tmp_path):
    """kill -9 of `dvc repro` leaves its `t2i train` running: the next run is refused."""
    folder = tmp_path / "m"
    parent = python(
        ORPHANING_PARENT, HOLD, folder, "t2i train m", stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    line = parent.stdout.readline()
    assert line.startswith("held "), line
    orphan = int(line.split()[1])
    try:
        parent.kill()
        parent.wait()
        assert try_lock(folder) == refusal(folder, f"t2i train m (pid {orphan})")
    finally:
        os.kill(orphan, signal.SIGKILL)  # the holder this test started, by its pid


def test_the_lock_is_released_when_the_block_ends_or_raises(tmp_path):
    folder = tmp_path / "new" / "m"
    assert lock_holder(folder) is None
    assert not folder.parent.exists()  # a probe creates nothing
    with model_lock(folder, "t2i evaluate m"):
        assert lock_holder(folder) is None  # held by this process: no other writer
        assert try_lock(folder) == refusal(folder, f"t2i evaluate m (pid {os.getpid()})")
        with pytest.raises(PipelineError) as nested, model_lock(folder, "t2i cas m"):
            pass  # a second writer in the same process is refused as well
        assert str(nested.value) == refusal(folder, f"t2i evaluate m (pid {os.getpid()})")[7:]
    assert lock_holder(folder) is None
    with pytest.raises(ValueError), model_lock(folder, "t2i train m"):
        raise ValueError("the stage failed")
    assert lock_holder(folder) is None
    assert try_lock(folder) == "acquired"


GARBAGE = [  # (what a crashed or hostile writer left in .lock, how the holder is named)
    (b"", "another process (its pid unknown)"),
    (b"\xff\xfe\x00 not utf-8", "another process (its pid unknown)"),
    (b"[1, 2]", "another process (its pid unknown)"),
    (b'{"pid": "12", "command": "t2i train m"}', "another process (its pid unknown)"),
    (b'{"pid": true, "command": "t2i train m"}', "another process (its pid unknown)"),
    (b'{"pid": 12, "command": ""}', "another process (its pid unknown)"),
    (b"[" * 3000, "another process (its pid unknown)"),
    (b'{"pid": 12, "command": "' + b"x" * 5000 + b'"}', "another process (its pid unknown)"),
    (b'{"pid": 12, "command": "t2i train\\nerror: forged"}', "t2i train?error: forged (pid 12)"),
    (b'{"pid": 12, "command": "' + b"y" * 300 + b'"}', "y" * 200 + "... (pid 12)"),
]


@pytest.mark.parametrize(("content", "holder"), GARBAGE)
def test_garbage_in_a_held_lock_file_is_still_one_line(tmp_path, content, holder):
    """Held by something that wrote no valid record: refused all the same, in one line."""
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / LOCK_NAME).write_bytes(content)
    with open(folder / LOCK_NAME, "rb") as other:  # another open file: a conflicting flock
        fcntl.flock(other, fcntl.LOCK_EX)
        with pytest.raises(PipelineError) as refused, model_lock(folder, "t2i train m"):
            pass
        assert lock_holder(folder) == holder
    assert str(refused.value) == refusal(folder, holder)[7:]
    assert "\n" not in str(refused.value)


def test_a_symlinked_or_fifo_lock_file_is_refused_and_its_target_untouched(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    (folder / LOCK_NAME).symlink_to(precious)
    with pytest.raises(PipelineError) as refused, model_lock(folder, "t2i train m"):
        pass
    assert str(refused.value).startswith(f"{folder / LOCK_NAME}: a symlink; ")
    assert precious.read_text() == "keep me"
    assert lock_holder(folder) is None
    (folder / LOCK_NAME).unlink()
    os.mkfifo(folder / LOCK_NAME)
    with pytest.raises(PipelineError) as refused, model_lock(folder, "t2i train m"):
        pass
    assert str(refused.value).startswith(f"{folder / LOCK_NAME}: not a regular file; ")
    assert lock_holder(folder) is None
