"""The COCO manifest: one Parquet row per image of a subset, its fate and its captions.

Written by the coco_download stage (pipeline/data/coco.py builds the rows), read by the
pack stage and by the caption tables to embed. Kept apart from the download code, so that
what only reads a manifest does not depend on the HTTP client.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.atomic import atomic_path
from pipeline.errors import PipelineError

MANIFEST_SCHEMA = pa.schema(
    [
        ("image_id", pa.int64()),
        ("file_name", pa.string()),
        ("split", pa.string()),
        ("url", pa.string()),
        ("path", pa.string()),
        ("status", pa.string()),  # ok | failed
        ("error", pa.string()),
        ("sha256", pa.string()),
        ("bytes", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("caption_ids", pa.list_(pa.int64())),
        ("captions", pa.list_(pa.string())),
    ]
)


def write_manifest(rows: list[dict], path: Path) -> None:
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_manifest(path: Path) -> list[dict]:
    if not path.is_file():
        raise PipelineError(f"{path}: missing; run the coco_download stage first")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise PipelineError(f"{path}: not a readable Parquet manifest ({exc})") from None
    if not set(MANIFEST_SCHEMA.names) <= set(table.column_names):
        raise PipelineError(f"{path}: manifest lacks columns {MANIFEST_SCHEMA.names}")
    return table.to_pylist()
