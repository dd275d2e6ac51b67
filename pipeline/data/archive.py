"""Safe zip extraction: no absolute paths, no '..', and a bound on what comes out."""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

from pipeline.atomic import atomic_path
from pipeline.errors import PipelineError


def _check_member(info: zipfile.ZipInfo, archive: Path) -> PurePosixPath:
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/") or ".." in path.parts or ":" in path.parts[0]:
        raise PipelineError(f"{archive}: refusing unsafe entry {info.filename!r} (path traversal)")
    return path


def extract_members(archive: Path, members: list[str], dest: Path, max_bytes: int) -> list[Path]:
    """Extract the named members (matched by file name) flat into ``dest``, atomically.

    Every entry of the archive is checked, not only the wanted ones: an archive holding a
    traversal entry is refused whole. The declared and the actual extracted sizes are bounded.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PipelineError(f"{archive}: not a valid zip file ({exc})") from None
    with zf:
        infos = zf.infolist()
        by_name = {}
        for info in infos:
            path = _check_member(info, archive)
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
