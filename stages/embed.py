"""Stage embed@<encoder>: every caption of a dataset into one vector, once, as Parquet shards.

Single process:  t2i embed clip-vit-b-32 coco
Many GPUs:       torchrun --nproc_per_node=4 --no-python t2i embed clip-vit-b-32 coco
Each rank embeds the shards i with i % WORLD_SIZE == RANK; the shards are the same whatever
the number of ranks.
"""

import logging
from pathlib import Path

import numpy as np

from pipeline.config import load_params
from pipeline.data.captions import caption_rows
from pipeline.data.embeddings import shard_name, write_embedding_shard
from pipeline.distributed import rank_device, torchrun_ranks
from pipeline.encoders import ENCODERS, load_encoder
from pipeline.errors import PipelineError
from pipeline.runtime import resolve_device
from stages.layout import COCO_MANIFESTS, embeddings_dir

log = logging.getLogger(__name__)


def run(params_path: Path, encoder_name: str, dataset: str) -> None:
    if encoder_name not in ENCODERS:
        raise PipelineError(f"unknown encoder {encoder_name!r}; expected one of {list(ENCODERS)}")
    p = load_params(params_path).embed
    ranks = torchrun_ranks()  # no process group: each rank embeds its own shards
    rank, world = ranks.rank, ranks.world
    device = rank_device(resolve_device(p.device), ranks)
    rows = caption_rows(dataset, COCO_MANIFESTS)
    encoder = load_encoder(encoder_name, p.encoder(encoder_name), device)
    encoder.precision = p.precision
    out = embeddings_dir(encoder_name, dataset)
    count = -(-len(rows) // p.rows_per_shard)
    if rank == 0:  # what an earlier run with other params or a kill left behind
        for stale in out.glob("*.tmp"):  # pathlib globs match dotfiles too
            stale.unlink(missing_ok=True)
        for old in out.glob("part-*.parquet"):
            if old.name not in {shard_name(i) for i in range(count)}:
                old.unlink()
    for index in range(rank, count, world):
        part = rows[index * p.rows_per_shard : (index + 1) * p.rows_per_shard]
        captions = [r["caption"] for r in part]
        counts = encoder.token_counts(captions)  # once: for the sort and the truncation count
        truncated = int(sum(n > encoder.info.max_tokens for n in counts))
        if truncated:
            log.info(
                "shard %d: %d captions longer than %d tokens, truncated as %s does",
                index,
                truncated,
                encoder.info.max_tokens,
                encoder_name,
            )
        vectors = encoder.encode(captions, p.batch_size, counts)
        meta = {
            **vars(encoder.info),
            "dataset": dataset,
            "dtype": p.dtype,
            "shard": index,
            "shards": count,
            "truncated_captions": truncated,
        }
        write_embedding_shard(
            out / shard_name(index),
            np.array([r["image_id"] for r in part]),
            np.array([r["caption_id"] for r in part]),
            captions,
            vectors,
            p.dtype,
            meta,
        )
        log.info("wrote %s (%d captions)", out / shard_name(index), len(part))
