"""Atomic writes: a reader sees either the old file or the whole new one, never half of it.

Every temp file is ``.<target name>.<8 random chars>.tmp`` in the target's own folder (never
in /tmp, so a rename is atomic and a killed run leaves nothing elsewhere). The next write of
the same target removes what a killed run left of it, ``remove_stale_temps`` clears a whole
folder when a stage starts, and ``.dvcignore`` keeps such files out of every DVC output.
A full disk while writing is one line, "disk full while writing PATH" (``disk_full``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import PipelineError

_UMASK = os.umask(0)
os.umask(_UMASK)

TEMP_GLOB = ".*.tmp"  # what every temp file made here looks like (also in .dvcignore)
_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(exc: BaseException, path: str | Path | None = None) -> PipelineError | None:
    """ "disk full while writing PATH" if ``exc``, or an exception it came from, is a full disk
    or quota (an OSError, or a library's error that quotes it, as safetensors' does); else None.
    PATH: ``path``, else the file the OSError names."""
    seen: list[BaseException] = []
    while exc is not None and not any(exc is s for s in seen):
        seen.append(exc)
        code = getattr(exc, "errno", None)
        if code in _FULL or any(os.strerror(c) in str(exc) for c in _FULL):
            where = path or getattr(exc, "filename", None) or "an output (its name unknown)"
            return PipelineError(f"disk full while writing {where}")
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Re-raise a full disk inside the block as one PipelineError naming ``path``."""
    try:
        yield
    except Exception as exc:
        error = disk_full(exc, path)
        if error is None:
            raise
        raise error from exc


def _temp_pattern(target: Path) -> re.Pattern:
    # mkstemp's random part is 8 chars of [a-z0-9_]: "a" never matches the temps of "a.b".
    return re.compile(rf"\.{re.escape(target.name)}\.[a-z0-9_]{{8}}\.tmp")


def remove_stale_temps(folder: str | Path, target: str | Path | None = None) -> list[Path]:
    """Delete temp files a killed run left in ``folder`` (only those of ``target`` if given)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = _temp_pattern(Path(target)) if target is not None else None
    removed = []
    for path in folder.glob(TEMP_GLOB):
        if path.is_file() and (pattern is None or pattern.fullmatch(path.name)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def new_temp(target: str | Path) -> Path:
    """A fresh empty temp file beside ``target`` (its folder is created)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    return Path(tmp)


def publish(tmp: str | Path, path: str | Path) -> None:
    """Give a finished temp file the usual mode (mkstemp makes 0600) and rename it into place."""
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, path)


@contextlib.contextmanager
def temp_beside(target: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``target``; it is deleted on exit, whatever happens."""
    target = Path(target)
    remove_stale_temps(target.parent, target)
    with writing(target):
        tmp = new_temp(target)
        try:
            yield tmp
        finally:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path in the same folder; on success it replaces ``path``."""
    with temp_beside(path) as tmp:
        yield tmp
        publish(tmp, path)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj: object) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())
