"""Safe zip extraction: no absolute paths, no '..', and a bound on what comes out.

Any fault of the archive (not a zip, a header that lies, a corrupt or truncated member) is
one PipelineError naming the file; the caller removes the archive so that a rerun fetches
it again. Directory entries (``./``, ``annotations/``) are skipped.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path, PurePosixPath

from pipeline.atomic import atomic_path
from pipeline.errors import PipelineError


def _check_member(info: zipfile.ZipInfo, archive: Path) -> PurePosixPath | None:
    """The entry's path, or None for a directory entry such as './'; unsafe names raise."""
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/") or ".." in path.parts:
        raise PipelineError(f"{archive}: refusing unsafe entry {info.filename!r} (path traversal)")
    if not path.parts or info.is_dir():
        return None
    if ":" in path.parts[0]:
        raise PipelineError(f"{archive}: refusing unsafe entry {info.filename!r} (drive letter)")
    return path


# What zipfile and zlib raise on a damaged archive, besides BadZipFile itself.
_ZIP_FAULTS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    RuntimeError,
    NotImplementedError,
    IndexError,
    KeyError,
)


def extract_members(archive: Path, members: list[str], dest: Path, max_bytes: int) -> list[Path]:
    """Extract the named members (matched by file name) flat into ``dest``, atomically.

    Every entry of the archive is checked, not only the wanted ones: an archive holding a
    traversal entry is refused whole. The declared and the actual extracted sizes are bounded.
    """
    try:
        return _extract(archive, members, dest, max_bytes)
    except _ZIP_FAULTS as exc:
        message = f"{archive}: not a valid zip file ({type(exc).__name__}: {exc})"
        raise PipelineError(message) from None


def _extract(archive: Path, members: list[str], dest: Path, max_bytes: int) -> list[Path]:
    with zipfile.ZipFile(archive) as zf:
        by_name = {}
        for info in zf.infolist():
            path = _check_member(info, archive)
            if path is not None:
                by_name.setdefault(path.name, info)
        missing = [m for m in members if m not in by_name]
        if missing:
            raise PipelineError(f"{archive}: expected entries {missing} not found")
        declared = sum(by_name[m].file_size for m in members)
        if declared > max_bytes:
            raise PipelineError(
                f"{archive}: entries would extract to {declared} bytes, over the bound of "
                f"{max_bytes} (download.coco.max_extract_bytes)"
            )
        written, outputs = 0, []
        for member in members:
            with (
                zf.open(by_name[member]) as src,
                atomic_path(dest / member) as tmp,
                tmp.open("wb") as out,
            ):
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > max_bytes:  # the sizes in the header lied: a zip bomb
                        raise PipelineError(f"{archive}: extracts to over {max_bytes} bytes")
                    out.write(chunk)
            outputs.append(dest / member)
    return outputs
