"""Caption-embedding Parquet shards: the only module that writes or reads them.

columns   image_id int64, caption_id int64, caption string,
          embedding fixed_size_list<float16|float32, D>
metadata  b"t2i": JSON of the encoder, its weights' id and sha256, dim, pooling,
          normalisation, library versions, and what was truncated
files     <dir>/part-00000.parquet, part-00001.parquet, ... (zstd)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.atomic import atomic_path
from pipeline.errors import PipelineError
from pipeline.jsonfile import parse_json

META_KEY = b"t2i"


def embedding_schema(dim: int, dtype: str, metadata: dict | None = None) -> pa.Schema:
    value = pa.float16() if dtype == "float16" else pa.float32()
    schema = pa.schema(
        [
            ("image_id", pa.int64()),
            ("caption_id", pa.int64()),
            ("caption", pa.string()),
            ("embedding", pa.list_(value, dim)),
        ]
    )
    return schema.with_metadata({META_KEY: json.dumps(metadata or {}, sort_keys=True)})


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def write_embedding_shard(
    path: Path,
    image_ids,
    caption_ids,
    captions: list[str],
    embeddings: np.ndarray,
    dtype: str,
    metadata: dict,
) -> None:
    """One shard, written to a temp file and renamed: a reader never sees half of it."""
    n, dim = embeddings.shape
    schema = embedding_schema(dim, dtype, metadata)
    flat = pa.array(embeddings.astype(dtype, copy=False).reshape(-1))
    table = pa.Table.from_arrays(
        [
            pa.array(np.asarray(image_ids, np.int64)),
            pa.array(np.asarray(caption_ids, np.int64)),
            pa.array(captions, pa.string()),
            pa.FixedSizeListArray.from_arrays(flat, dim),
        ],
        schema=schema,
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def shard_paths(folder: Path) -> list[Path]:
    paths = sorted(Path(folder).glob("part-*.parquet"))
    if not paths:
        raise PipelineError(f"{folder}: no embedding shards (part-*.parquet); run the embed stage")
    return paths


def read_metadata(path: Path) -> dict:
    raw = pq.read_schema(path).metadata or {}
    if META_KEY not in raw:
        raise PipelineError(f"{path}: not an embedding shard of this project (no t2i metadata)")
    return parse_json(raw[META_KEY], str(path), "embedding shard's metadata", "embed it again")


def read_embeddings(folder: Path, as_torch: bool = False):
    """All shards of a folder: (columns dict of numpy arrays, embeddings (N, D)).

    The embedding column is a fixed-size list, so its values are one contiguous buffer:
    reshaping it is the whole conversion, with no Python loop over rows.
    """
    table = pq.read_table(shard_paths(folder))
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size
    values = column.values.to_numpy(zero_copy_only=False).reshape(-1, dim)
    columns = {name: table.column(name).to_numpy() for name in ("image_id", "caption_id")}
    columns["caption"] = table.column("caption").to_pylist()
    if as_torch:
        return columns, torch.from_numpy(np.array(values))  # a writable copy for torch
    return columns, values


def caption_lookup(folder: Path) -> tuple[dict[int, int], torch.Tensor]:
    """(caption_id -> row, embeddings as a float32 tensor (N, D)) of a dataset's shards.

    Keyed by caption id alone, so an id on two rows is an error naming both: one caption's
    vector would silently stand in for the other's."""
    columns, values = read_embeddings(folder)
    row_of: dict[int, int] = {}
    for i, c in enumerate(columns["caption_id"].tolist()):
        if c in row_of:
            j = row_of[c]
            image, caption = columns["image_id"], columns["caption"]
            raise PipelineError(
                f"{folder}: caption id {c} is on row {j} (image {image[j]}, "
                f"{ascii(caption[j][:60])}) and row {i} (image {image[i]}, "
                f"{ascii(caption[i][:60])}); caption ids must be unique: rerun the embed stage"
            )
        row_of[c] = i
    return row_of, torch.from_numpy(np.array(values, dtype=np.float32))  # a writable copy


@dataclass(frozen=True)
class WeightsIdentity:
    weights_id: str
    weights_sha256: str

    def as_config(self) -> dict[str, str]:
        """As a model's config.json records them."""
        return {"encoder_weights": self.weights_id, "encoder_sha256": self.weights_sha256}


def encoder_identity(folder: Path) -> WeightsIdentity:
    """The encoder weights that embedded ``folder``: their id and the sha256 of their file."""
    meta = read_metadata(shard_paths(folder)[0])
    return WeightsIdentity(meta["weights_id"], meta["weights_sha256"])
