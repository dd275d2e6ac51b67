"""Fashion-MNIST acquisition: the four IDX files, verified, from a local folder or mirrors.

The raw folder holds the four IDX files *decompressed*. Their sha256 is taken over the
decompressed bytes because Debian re-gzipped the files, so .gz checksums differ by source;
this way the stage's output is byte-identical whichever source supplied it.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.atomic import remove_stale_temps, temp_beside, write_bytes
from pipeline.data.http import DownloadError, download
from pipeline.errors import PipelineError
from pipeline.redact import redact

log = logging.getLogger(__name__)

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

FMNIST_IDX_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


@dataclass(frozen=True)
class HttpLimits:
    """How each mirror download is retried and bounded: the arguments of
    :func:`pipeline.data.http.download` (download.fmnist's keys of the same names)."""

    retries: int = 4
    backoff_s: float = 1.0
    timeout_s: float = 60.0
    deadline_s: float = 3600.0


def _verified(name: str, compressed: bytes, origin: str) -> bytes:
    try:
        raw = gzip.decompress(compressed)
    except (OSError, EOFError, zlib.error) as exc:
        raise PipelineError(f"{origin}: not a valid gzip file ({exc})") from None
    digest = hashlib.sha256(raw).hexdigest()
    if digest != FMNIST_IDX_SHA256[name]:
        raise PipelineError(
            f"{origin}: sha256 of the decompressed data is {digest}, expected "
            f"{FMNIST_IDX_SHA256[name]}; the file is corrupt or not Fashion-MNIST. "
            "Delete it or point download.fmnist at another source."
        )
    return raw


def _local_dirs(source: str, local_dir: str | None, debian_dir: Path) -> list[Path]:
    if source == "mirror":
        return []
    dirs = [Path(local_dir)] if local_dir else []
    if debian_dir.is_dir():
        dirs.append(debian_dir)
    return dirs


def fetch_fmnist(
    out_dir: Path,
    *,
    source: str = "auto",
    local_dir: str | None = None,
    mirrors: list[str] | None = None,
    http: HttpLimits = HttpLimits(),
    debian_dir: Path = DEBIAN_DIR,
) -> dict[str, str]:
    """Put the four verified, decompressed IDX files in ``out_dir``; return name -> origin.

    Mirrors are tried in order; any failure of one (network, short body, deadline, bad gzip,
    wrong sha256) moves on to the next. Downloads go to temp files beside their target,
    retried and bounded by ``http``.
    """
    if local_dir and not Path(local_dir).is_dir():
        raise PipelineError(f"download.fmnist.local_dir: {local_dir} is not a directory")
    remove_stale_temps(out_dir)  # what a killed run left
    dirs = _local_dirs(source, local_dir, debian_dir)
    origins: dict[str, str] = {}
    for name in FMNIST_IDX_SHA256:
        raw, origin = _from_local(name, dirs)
        if raw is None and source != "local":
            raw, origin = _from_mirrors(name, mirrors or [], out_dir, asdict(http))
        if raw is None:
            raise PipelineError(_not_found_message(name, source, dirs, origin))
        write_bytes(out_dir / name, raw)
        origins[name] = origin
        log.info("%s <- %s", name, origin)
    return origins


def _from_local(name: str, dirs: list[Path]) -> tuple[bytes | None, str]:
    for folder in dirs:
        path = folder / f"{name}.gz"
        if path.is_file():
            return _verified(name, path.read_bytes(), str(path)), str(path)
    return None, ""


def _from_mirrors(
    name: str, mirrors: list[str], out_dir: Path, http: dict
) -> tuple[bytes | None, str]:
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + f"/{name}.gz"
        with temp_beside(out_dir / f"{name}.gz") as target:
            try:
                download(url, target, **http)
                return _verified(name, target.read_bytes(), redact(url)), redact(url)
            except (DownloadError, PipelineError) as exc:
                log.warning("%s; trying the next mirror", exc)
                failures.append(str(exc))
    return None, "; ".join(failures)


def _not_found_message(name: str, source: str, dirs: list[Path], failures: str) -> str:
    looked = ", ".join(str(d) for d in dirs) or "no local folder"
    parts = [f"Fashion-MNIST file {name}.gz could not be obtained (source: {source})."]
    parts.append(f"Looked in: {looked}.")
    if failures:
        parts.append(f"Mirrors failed: {failures}.")
    parts.append(
        "Supply the files one of these ways: `apt-get install dataset-fashion-mnist` "
        f"(puts them in {DEBIAN_DIR}); or set download.fmnist.local_dir in params.yaml to a "
        "folder holding the four IDX .gz files; or run with network access to the mirrors."
    )
    return " ".join(parts)
