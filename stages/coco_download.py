"""Stage coco_download: annotations, the chosen image subsets, and a per-image manifest."""

import os
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from pipeline.atomic import remove_stale_temps, write_json
from pipeline.config import load_params
from pipeline.data.archive import extract_members
from pipeline.data.coco import (
    CaptionIds,
    failure_summary,
    fetch_images,
    image_records,
    local_images,
    read_captions,
    select_coco_subset,
)
from pipeline.data.coco_manifest import write_manifest
from pipeline.data.http import DownloadError, download, host_key
from pipeline.errors import PipelineError
from pipeline.hashing import sha256_file
from stages.layout import COCO_MANIFESTS, COCO_STORE, METRICS

LOCAL_HINT = (
    "To use a COCO copy on disk, set download.coco.source: local and download.coco.local_root "
    "to a folder holding annotations/captions_train2014.json, annotations/"
    "captions_val2014.json, train2014/ and val2014/."
)


def _official_annotations(p, http: dict, splits: set[str]) -> Path:
    name = PurePosixPath(urlsplit(p.annotations_url).path).name or "annotations.zip"
    archive = COCO_STORE / name
    remove_stale_temps(COCO_STORE)
    remove_stale_temps(COCO_STORE / "annotations")
    if not archive.is_file():
        try:  # redirects may lead to the annotations' own host, or an image host
            hosts = [host_key(p.annotations_url), *p.image_hosts]
            download(p.annotations_url, archive, allowed_hosts=hosts, **http)
        except DownloadError as exc:
            message = f"COCO annotations could not be downloaded: {exc}. {LOCAL_HINT}"
            raise PipelineError(message) from None
    names = sorted(f"captions_{split}.json" for split in splits)
    try:
        digest = p.annotations_sha256 and sha256_file(archive)
        if digest and digest != p.annotations_sha256:
            raise PipelineError(
                f"{archive}: sha256 {digest}, expected {p.annotations_sha256} "
                "(download.coco.annotations_sha256)"
            )
        extract_members(archive, names, COCO_STORE / "annotations", p.max_extract_bytes)
    except PipelineError as exc:
        archive.unlink()  # a bad archive is fetched again on the next run
        raise PipelineError(f"{exc}; the archive was removed: a rerun fetches it again") from None
    return COCO_STORE / "annotations"


def run(params_path: Path) -> None:
    p = load_params(params_path).download.coco
    http = p.model_dump(include={"retries", "backoff_s", "timeout_s", "deadline_s"})
    root = Path(p.local_root or "") if p.source == "local" else None
    if root is not None and (not p.local_root or not root.is_dir()):
        raise PipelineError(
            f"download.coco.local_root: {p.local_root!r} is not a directory. " + LOCAL_HINT
        )
    splits = {s.split for s in p.subsets.values()}
    annotations = root / "annotations" if root else _official_annotations(p, http, splits)
    summary, seen, manifests = {}, CaptionIds(), {}
    for name, subset in p.subsets.items():
        path = annotations / f"captions_{subset.split}.json"
        coco_index = read_captions(path, p.max_annotations_bytes, root, seen)
        ids = select_coco_subset(coco_index, subset.num_images, subset.seed)
        records = image_records(coco_index, ids, subset.split)
        del coco_index  # the parsed annotations: ~9x their JSON's size, not needed past here
        if root is not None:
            workers = min(p.workers, os.cpu_count() or 1)
            rows = local_images(records, subset.split, root, workers=workers)
        else:
            store, hosts = COCO_STORE / subset.split, p.image_hosts
            rows = fetch_images(
                records, subset.split, store, workers=p.workers, image_hosts=hosts, **http
            )
        manifests[name], summary[name] = rows, failure_summary(rows)
    for name, rows in manifests.items():  # once every split's annotations passed their checks
        write_manifest(rows, COCO_MANIFESTS / f"{name}.parquet")
    write_json(METRICS / "coco" / "download.json", summary)
    for name, s in summary.items():
        if s["failure_rate"] > p.max_failure_rate:
            raise PipelineError(
                f"coco_download: {s['failed']} of {s['images']} images of subset {name!r} "
                f"failed ({s['failure_rate']:.2%} > download.coco.max_failure_rate "
                f"{p.max_failure_rate:.2%}); see {COCO_MANIFESTS / name}.parquet, e.g. "
                f"{s['first_failures'][:3]}"
            )
