"""One writer per model folder: a command that writes ``<folder>`` holds an flock on
``<folder>/.lock`` for as long as it runs.

The lock belongs to the process's open file, so it dies with the process however that ends
(an exception, a signal, kill -9): no stale lock is ever left to clear by hand. The reverse
holds too: a `t2i train` orphaned by a kill -9 of `dvc repro` still runs and still holds
it, so the next run refuses in one line, naming the holder, instead of writing the same
files at once. The holder writes ``{"pid": ..., "command": ...}`` into the file so that the
refusal can say who it is; that text is only ever shown, never trusted, and the file itself
stays (deleting it would let two processes lock two different files of one name). It is no
DVC output: the outputs are the model's own files beside it.

Readers do not lock: a model is replaced atomically (pipeline/atomic.py) and loading reads
one snapshot (pipeline/checkpoint.py). They only ask :func:`lock_holder`, so that a file
missing in the middle of a retrain is "being written by ...; retry" and not "train it".
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from pipeline.atomic import writing
from pipeline.errors import PipelineError

LOCK_NAME = ".lock"
MAX_HOLDER_BYTES = 4096  # {"pid": ..., "command": ...}: a line; garbage beyond is not read
MAX_COMMAND_CHARS = 200
_HELD: set[tuple[int, int]] = set()  # (device, inode) of the lock files this process holds
_PLAIN = "the lock of a model folder is a plain file that the pipeline writes: remove it, rerun"


def _open(folder: Path) -> int:
    """A new descriptor of ``folder/.lock``, made if missing. A symlink or anything but a
    regular file is refused: a holder truncates and writes it."""
    path = folder / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
    except OSError as exc:
        why = "a symlink" if exc.errno == errno.ELOOP else f"not usable ({exc.strerror})"
        raise PipelineError(f"{path}: {why}; {_PLAIN}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PipelineError(f"{path}: not a regular file; {_PLAIN}")
    return fd


def _holder_text(fd: int) -> str:
    """'<command> (pid N)' as the holder wrote it, or a plain phrase for anything else."""
    data = os.pread(fd, MAX_HOLDER_BYTES + 1, 0)
    try:
        record = json.loads(data.decode("utf-8")) if len(data) <= MAX_HOLDER_BYTES else None
    except (ValueError, RecursionError):
        record = None
    pid = record.get("pid") if isinstance(record, dict) else None
    command = record.get("command") if isinstance(record, dict) else None
    if type(pid) is not int or pid <= 0 or not isinstance(command, str) or not command:
        return "another process (its pid unknown)"
    shown = "".join(c if c.isprintable() else "?" for c in command[:MAX_COMMAND_CHARS])
    return f"{shown}{'...' if len(command) > MAX_COMMAND_CHARS else ''} (pid {pid})"


def lock_holder(folder: Path) -> str | None:
    """'<command> (pid N)' of another process writing ``folder`` now, or None when none is:
    this process holds it itself (`t2i evaluate` loads the model it locks: a file missing
    there is missing, not "being written"), or its lock file is missing, unreadable, a
    symlink or no regular file (no writer of this pipeline holds such). A probe: it creates
    nothing and holds nothing when it returns."""
    try:
        fd = os.open(Path(folder) / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in _HELD:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder_text(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def model_lock(folder: Path, command: str) -> Iterator[None]:
    """Hold ``folder``'s lock for the block (``folder`` is created if missing); if another
    process (or another block of this one) holds it, one PipelineError naming the holder."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PipelineError(f"{folder}: cannot make the model folder ({exc.strerror})") from None
    fd = _open(folder)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PipelineError(
                f"{folder}: {_holder_text(fd)} is writing this model now; wait for it to "
                "finish, or stop it"
            ) from None
        st = os.fstat(fd)
        _HELD.add((st.st_dev, st.st_ino))
        try:
            with writing(folder / LOCK_NAME):
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": command}).encode(), 0)
            yield
        finally:
            _HELD.discard((st.st_dev, st.st_ino))
            os.ftruncate(fd, 0)  # still held: no prober reads a finished writer's pid
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
