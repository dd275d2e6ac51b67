"""MS-COCO 2014 captions (paper §2.2, §2.3): annotations, subset selection, image fetching.

Every image's fate is one row of a Parquet manifest (after img2dataset;
pipeline/data/coco_manifest.py): where it came from, whether it decoded, its sha256, and its
captions. The pack stage reads only the manifest, so DVC sees a change of any image through
the manifest's hash.

The annotations never choose a path: an image's file is ``COCO_<split>_<12-digit id>.jpg``
under the store (or the local root), derived from its id and split alone. An annotation whose
``file_name`` is anything else (absolute, with ``..``, another name) is rejected, and the
reason is recorded in the manifest.

What the annotations may not do:
- fetch from a host the user did not allow: every ``coco_url`` (and every redirect) must name
  a host of ``download.coco.image_hosts``; another is an error naming the image id and host;
- reuse an id: image ids are unique within a split's file, caption ids within it and across
  the splits (embeddings are looked up by caption id alone), a duplicate names both places;
- carry a caption that is not one line of text (pipeline/caption_text.py);
- reach out of a local root: a symlink under ``local_root`` that leads outside it is refused,
  and an annotations file is read only up to ``max_annotations_bytes``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools.coco import COCO
from tqdm import tqdm

from pipeline.atomic import remove_stale_temps
from pipeline.caption_text import caption_problem, one_line
from pipeline.data.http import DownloadError, check_host, check_url, download
from pipeline.errors import PipelineError
from pipeline.jsonfile import parse_json
from pipeline.redact import redact

log = logging.getLogger(__name__)


@dataclass
class CocoImage:
    image_id: int
    file_name: str  # the official name, derived from the id and split
    url: str
    captions: list[str] = field(default_factory=list)
    caption_ids: list[int] = field(default_factory=list)
    rejected: str = ""  # why the annotations' entry is refused; "" when it is fine


MAX_IMAGE_ID = 10**12 - 1  # the file names carry 12 digits


def official_file_name(split: str, image_id: int) -> str:
    return f"COCO_{split}_{image_id:012d}.jpg"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shape_error(path: Path, where: str, entry: dict, key: str, expected: str) -> PipelineError:
    got = json.dumps(entry.get(key)) if key in entry else "nothing"
    return PipelineError(f"{path}: {where}: {key!r} should be {expected}, got {got[:80]}")


def _first_index(items: list[dict], key: str, value) -> int:
    return next(i for i, item in enumerate(items) if item[key] == value)


def _check_entries(path: Path, data: dict) -> None:
    """Types pycocotools and this module rely on, unique ids, captions that are text; the
    first bad entry is named (both entries for a duplicate)."""
    image_ids, caption_ids = set(), set()
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict):
            raise PipelineError(f"{path}: images[{i}] should be an object")
        if not _is_int(image.get("id")) or not 0 <= image["id"] <= MAX_IMAGE_ID:
            raise _shape_error(path, f"images[{i}]", image, "id", "an integer of 0..10^12-1")
        for key in ("file_name", "coco_url"):
            if key in image and not isinstance(image[key], str):
                raise _shape_error(path, f"images[{i}] (id {image['id']})", image, key, "a string")
        if image["id"] in image_ids:
            first = _first_index(data["images"], "id", image["id"])
            raise PipelineError(
                f"{path}: images[{first}] and images[{i}] have the same id {image['id']}: "
                "image ids must be unique within a split"
            )
        image_ids.add(image["id"])
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise PipelineError(f"{path}: annotations[{i}] should be an object")
        for key in ("id", "image_id"):
            if not _is_int(ann.get(key)):
                raise _shape_error(path, f"annotations[{i}]", ann, key, "an integer")
        if not isinstance(ann.get("caption"), str):
            raise _shape_error(
                path, f"annotations[{i}] (id {ann['id']})", ann, "caption", "a string"
            )
        problem = caption_problem(ann["caption"])
        if problem:
            shown = ascii(ann["caption"][:80])
            raise PipelineError(f"{path}: annotations[{i}] (id {ann['id']}): {shown} {problem}")
        if ann["id"] in caption_ids:
            first = _first_index(data["annotations"], "id", ann["id"])
            raise PipelineError(
                f"{path}: annotations[{first}] and annotations[{i}] have the same caption id "
                f"{ann['id']}: caption ids must be unique (embeddings are looked up by them)"
            )
        caption_ids.add(ann["id"])


class CaptionIds:
    """The caption ids of each split's annotations read so far: one id in two files is an
    error, or a training image would take the other split's caption vector."""

    def __init__(self):
        self.by_file: dict[Path, np.ndarray] = {}

    def add(self, path: Path, data: dict) -> None:
        ids = np.fromiter((a["id"] for a in data["annotations"]), np.int64)
        for other, seen in self.by_file.items():
            common = np.intersect1d(ids, seen)
            if len(common) and other != path:
                first = int(common[0])
                raise PipelineError(
                    f"caption id {first} is in both {other} and {path} (annotations["
                    f"{_first_index(data['annotations'], 'id', first)}] there; {len(common)} "
                    "shared ids): caption ids must be unique across the splits"
                )
        self.by_file[path] = ids


def inside_root(path: Path, root: Path) -> Path:
    """``path``, refused when a symlink on it leads outside ``root`` (a local COCO root)."""
    resolved, top = Path(path).resolve(), Path(root).resolve()
    if resolved != top and top not in resolved.parents:
        raise PipelineError(
            f"{path}: a symlink to {resolved}, outside download.coco.local_root {root}; "
            "copy the file into the root (symlinks that leave it are not followed)"
        )
    return resolved


def read_bounded(path: Path, max_bytes: int) -> bytes:
    """A regular file's bytes, refused when larger than ``max_bytes`` (never read past it)."""
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise PipelineError(f"{path}: not a regular file")
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise PipelineError(f"{path}: not readable ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise PipelineError(
            f"{path}: larger than download.coco.max_annotations_bytes ({max_bytes} bytes)"
        )
    return data


def read_captions(
    path: Path,
    max_bytes: int = 1_000_000_000,
    root: Path | None = None,
    seen: CaptionIds | None = None,
) -> COCO:
    """Load a captions_*.json with pycocotools, after checking it has the official shape.

    ``root``: the local COCO root it must stay inside; ``seen``: the other splits' ids."""
    if root is not None:
        inside_root(path, root)
    raw = read_bounded(path, max_bytes)
    data = parse_json(raw, str(path), "COCO captions JSON", max_depth=None)
    for key in ("images", "annotations"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise PipelineError(f"{path}: expected a COCO captions JSON with a '{key}' list")
    _check_entries(Path(path), data)
    if seen is not None:
        seen.add(Path(path), data)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def select_coco_subset(coco: COCO, num_images: int | None, seed: int) -> list[int]:
    """Image ids: all in id order, or ``num_images`` drawn without replacement by ``seed``.

    Deterministic: the same annotations and params give the same ids in the same order.
    """
    ids = np.array(sorted(coco.getImgIds()), dtype=np.int64)
    if num_images is None:
        return ids.tolist()
    if num_images > len(ids):
        raise PipelineError(f"num_images {num_images} exceeds the {len(ids)} images of the split")
    return np.random.default_rng(seed).choice(ids, size=num_images, replace=False).tolist()


def file_name_problem(given: str | None, split: str, image_id: int) -> str:
    """Why an annotation's ``file_name`` is refused, or "" when it is the official name."""
    expected = official_file_name(split, image_id)
    if given is None:
        return f"no file_name in the annotations (expected {expected})"
    if given == expected:
        return ""
    shown = repr(given[:200])
    if given.startswith(("/", "\\")) or (len(given) > 1 and given[1] == ":"):
        return f"file_name {shown} is an absolute path; expected {expected}"
    if ".." in given.replace("\\", "/").split("/"):
        return f"file_name {shown} has '..' (path traversal); expected {expected}"
    return f"file_name {shown} is not the official COCO_<split>_<12-digit id>.jpg ({expected})"


def image_records(coco: COCO, ids: list[int], split: str) -> list[CocoImage]:
    records = []
    for image_id in ids:
        info = coco.imgs[image_id]
        anns = sorted(coco.imgToAnns.get(image_id, []), key=lambda a: a["id"])
        records.append(
            CocoImage(
                image_id=int(image_id),
                file_name=official_file_name(split, int(image_id)),
                url=info.get("coco_url", ""),
                captions=[one_line(a["caption"]) for a in anns],
                caption_ids=[int(a["id"]) for a in anns],
                rejected=file_name_problem(info.get("file_name"), split, int(image_id)),
            )
        )
    return records


def verify_image(path: Path) -> dict:
    """Decode the whole file (at 1/8 scale, which still reads every byte); return its facts."""
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
        image.load()  # raises on truncated or corrupt data
    return {
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "width": width,
        "height": height,
    }


def _row(record: CocoImage, split: str, path: Path, status: str, error: str = "", **facts):
    return {
        "image_id": record.image_id,
        "file_name": record.file_name,
        "split": split,
        "url": redact(record.url),
        "path": str(path),
        "status": status,
        "error": redact(error),
        "sha256": facts.get("sha256", ""),
        "bytes": facts.get("bytes", 0),
        "width": facts.get("width", 0),
        "height": facts.get("height", 0),
        "caption_ids": record.caption_ids,
        "captions": record.captions,
    }


def _checked(record: CocoImage, split: str, path: Path) -> dict:
    try:
        return _row(record, split, path, "ok", **verify_image(path))
    except UnidentifiedImageError:
        return _row(record, split, path, "failed", "does not decode as an image: unknown format")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        return _row(record, split, path, "failed", f"does not decode as an image: {exc}")


def local_images(records: list[CocoImage], split: str, root: Path, workers: int = 1) -> list[dict]:
    """Rows for images read in place from a local COCO root (not copied), verified on
    ``workers`` threads (decoding and hashing release the GIL), in the order of ``records``.
    A symlink (the split's folder, or an image) that leads outside ``root`` is an error."""
    image_dir = root / split
    inside_root(image_dir, root)
    for record in records:
        if not record.rejected and (image_dir / record.file_name).is_symlink():
            inside_root(image_dir / record.file_name, root)

    def one(record: CocoImage) -> dict:
        path = image_dir / record.file_name  # derived from the id: always inside image_dir
        if record.rejected:
            return _row(record, split, path, "failed", record.rejected)
        if not path.is_file():
            return _row(record, split, path, "failed", f"{path}: missing")
        return _checked(record, split, path)

    with _thread_pool(workers) as pool:
        results = pool.map(one, records, chunksize=64)
        return list(tqdm(results, total=len(records), desc=f"verify {split}", disable=None))


def _host_error(image_id: int, url: str, host: str, hosts: list[str], how: str) -> PipelineError:
    return PipelineError(
        f"image {image_id}: coco_url {redact(url)} {how} host {host}, which is not in "
        f"download.coco.image_hosts ({', '.join(hosts)}); add it there only if you trust it"
    )


@contextlib.contextmanager
def _thread_pool(workers: int):
    """A thread pool that, interrupted (Ctrl-C, SIGTERM, an error), cancels every task not yet
    started. A plain ``with ThreadPoolExecutor`` would first finish them all: every download
    of the subset, hours for a Ctrl-C."""
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def check_image_hosts(records: list[CocoImage], hosts: list[str]) -> None:
    """Before any request: every coco_url names an allowed host, or the annotations are refused."""
    for record in records:
        if record.rejected or not record.url:
            continue
        try:
            check_url(record.url)
            check_host(record.url, hosts)
        except DownloadError as exc:
            if exc.refused_host:
                raise _host_error(
                    record.image_id, record.url, exc.refused_host, hosts, "names"
                ) from None
            # any other bad URL is that image's failure, recorded in the manifest


def fetch_images(
    records: list[CocoImage], split: str, store: Path, *, workers: int, image_hosts, **http
) -> list[dict]:
    """Download each image by its coco_url into ``store`` (resuming), verify it decodes.

    Only from ``image_hosts``, redirects included: the first refusal stops the stage.
    ``http``: retries, backoff_s, timeout_s, deadline_s of :func:`download`.
    """
    check_image_hosts(records, image_hosts)
    refused: list[PipelineError] = []
    stop = threading.Event()

    def one(record: CocoImage) -> dict:
        path = store / record.file_name  # derived from the id: always inside the store
        if stop.is_set():
            return _row(record, split, path, "failed", "not fetched: the stage stopped")
        if record.rejected:
            return _row(record, split, path, "failed", record.rejected)
        if path.is_file():
            row = _checked(record, split, path)
            if row["status"] == "ok":
                return row  # already here and valid: not fetched again
        if not record.url:
            return _row(record, split, path, "failed", "no coco_url in the annotations")
        try:
            download(record.url, path, allowed_hosts=image_hosts, **http)
        except DownloadError as exc:
            if exc.refused_host:
                how = "redirected to"
                refused.append(
                    _host_error(record.image_id, record.url, exc.refused_host, image_hosts, how)
                )
                stop.set()
            return _row(record, split, path, "failed", str(exc))
        row = _checked(record, split, path)
        if row["status"] != "ok":
            path.unlink(missing_ok=True)  # a bad file would pass for present next time
        return row

    store.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(store)  # what a killed run left
    with _thread_pool(workers) as pool:
        results = pool.map(one, records)  # keeps the subset's order
        rows = list(tqdm(results, total=len(records), desc=f"fetch {split}", disable=None))
    if refused:
        raise refused[0]
    return rows


def failure_summary(rows: list[dict]) -> dict:
    failed = [r for r in rows if r["status"] != "ok"]
    return {
        "images": len(rows),
        "ok": len(rows) - len(failed),
        "failed": len(failed),
        "failure_rate": len(failed) / len(rows) if rows else 0.0,
        "captions": sum(len(r["captions"]) for r in rows if r["status"] == "ok"),
        "first_failures": [
            {"image_id": r["image_id"], "url": r["url"], "error": r["error"]} for r in failed[:10]
        ],
    }
