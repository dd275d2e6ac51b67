"""MS-COCO 2014 captions (paper §2.2, §2.3): annotations, subset selection, image fetching.

Every image's fate is one row of a Parquet manifest (after img2dataset;
pipeline/data/coco_manifest.py): where it came from, whether it decoded, its sha256, and its
captions. The pack stage reads only the manifest, so DVC sees a change of any image through
the manifest's hash.

The annotations never choose a path: an image's file is ``COCO_<split>_<12-digit id>.jpg``
under the store (or the local root), derived from its id and split alone. An annotation whose
``file_name`` is anything else (absolute, with ``..``, another name) is rejected, and the
reason is recorded in the manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools.coco import COCO
from tqdm import tqdm

from pipeline.atomic import remove_stale_temps
from pipeline.data.http import DownloadError, download
from pipeline.errors import PipelineError
from pipeline.jsonfile import read_json
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
ANNOTATIONS_MAX_BYTES = 2**30  # captions_train2014.json: 66 MB


def official_file_name(split: str, image_id: int) -> str:
    return f"COCO_{split}_{image_id:012d}.jpg"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shape_error(path: Path, where: str, entry: dict, key: str, expected: str) -> PipelineError:
    got = json.dumps(entry.get(key)) if key in entry else "nothing"
    return PipelineError(f"{path}: {where}: {key!r} should be {expected}, got {got[:80]}")


def _check_entries(path: Path, data: dict) -> None:
    """Types pycocotools and this module rely on; the first bad entry is named."""
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict):
            raise PipelineError(f"{path}: images[{i}] should be an object")
        if not _is_int(image.get("id")) or not 0 <= image["id"] <= MAX_IMAGE_ID:
            raise _shape_error(path, f"images[{i}]", image, "id", "an integer of 0..10^12-1")
        for key in ("file_name", "coco_url"):
            if key in image and not isinstance(image[key], str):
                raise _shape_error(path, f"images[{i}] (id {image['id']})", image, key, "a string")
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


def read_captions(path: Path) -> COCO:
    """Load a captions_*.json with pycocotools, after checking it has the official shape."""
    data = read_json(path, "COCO captions JSON", max_bytes=ANNOTATIONS_MAX_BYTES)
    for key in ("images", "annotations"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise PipelineError(f"{path}: expected a COCO captions JSON with a '{key}' list")
    _check_entries(Path(path), data)
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
                captions=[a["caption"].strip() for a in anns],
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


def local_images(
    records: list[CocoImage], split: str, image_dir: Path, workers: int = 1
) -> list[dict]:
    """Rows for images read in place from a local COCO root (not copied), verified on
    ``workers`` threads (decoding and hashing release the GIL), in the order of ``records``."""

    def one(record: CocoImage) -> dict:
        path = image_dir / record.file_name  # derived from the id: always inside image_dir
        if record.rejected:
            return _row(record, split, path, "failed", record.rejected)
        if not path.is_file():
            return _row(record, split, path, "failed", f"{path}: missing")
        return _checked(record, split, path)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(one, records, chunksize=64)
        return list(tqdm(results, total=len(records), desc=f"verify {split}", disable=None))


def fetch_images(
    records: list[CocoImage], split: str, store: Path, *, workers: int, **http
) -> list[dict]:
    """Download each image by its coco_url into ``store`` (resuming), verify it decodes.

    ``http``: retries, backoff_s, timeout_s, deadline_s of :func:`download`.
    """

    def one(record: CocoImage) -> dict:
        path = store / record.file_name  # derived from the id: always inside the store
        if record.rejected:
            return _row(record, split, path, "failed", record.rejected)
        if path.is_file():
            row = _checked(record, split, path)
            if row["status"] == "ok":
                return row  # already here and valid: not fetched again
        if not record.url:
            return _row(record, split, path, "failed", "no coco_url in the annotations")
        try:
            download(record.url, path, **http)
        except DownloadError as exc:
            return _row(record, split, path, "failed", str(exc))
        row = _checked(record, split, path)
        if row["status"] != "ok":
            path.unlink(missing_ok=True)  # a bad file would pass for present next time
        return row

    store.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(store)  # what a killed run left
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(one, records)  # keeps the subset's order
        return list(tqdm(results, total=len(records), desc=f"fetch {split}", disable=None))


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
