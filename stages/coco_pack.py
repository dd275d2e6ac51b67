"""Stage coco_pack: the verified COCO images of each subset into WebDataset tar shards."""

import os
from contextlib import closing
from pathlib import Path

from pipeline.atomic import TEMP_GLOB, write_json
from pipeline.config import load_params
from pipeline.data.coco_manifest import read_manifest
from pipeline.data.images import prepare_jpegs
from pipeline.data.shards import SampleMeta, write_shards
from stages.layout import COCO_MANIFESTS, COCO_SHARDS


def run(params_path: Path) -> None:
    p = load_params(params_path).pack.coco
    workers = p.workers or os.cpu_count() or 1
    # index.json goes first and comes back last, so it never describes shards not there.
    (COCO_SHARDS / "index.json").unlink(missing_ok=True)
    for stale in [*COCO_SHARDS.glob("*.tar"), *COCO_SHARDS.glob(TEMP_GLOB)]:
        stale.unlink()  # what a killed run left; the rerun writes every shard again
    index = {"image_size": p.image_size, "resize_mode": p.resize_mode, "subsets": {}}
    for manifest in sorted(COCO_MANIFESTS.glob("*.parquet")):
        rows = [r for r in read_manifest(manifest) if r["status"] == "ok"]
        jpegs = prepare_jpegs(
            ((r["path"], r["sha256"]) for r in rows),
            p.image_size,
            p.resize_mode,
            p.jpeg_quality,
            workers,
        )
        samples = (
            {
                "__key__": f"{r['image_id']:012d}",
                "jpg": jpeg,
                "json": SampleMeta(
                    image_id=r["image_id"],
                    file_name=r["file_name"],
                    split=r["split"],
                    original_size=[r["width"], r["height"]],
                    caption_ids=r["caption_ids"],
                    captions=r["captions"],
                ),
            }
            for r, jpeg in zip(rows, jpegs, strict=True)
        )
        with closing(jpegs):  # an interruption stops the workers here, not at exit
            shards = write_shards(
                samples,
                COCO_SHARDS,
                manifest.stem,
                maxcount=p.shard_maxcount,
                maxsize=p.shard_maxsize,
            )
        index["subsets"][manifest.stem] = {
            "images": len(rows),
            "captions": sum(len(r["captions"]) for r in rows),
            "shards": [s.name for s in shards],
        }
    write_json(COCO_SHARDS / "index.json", index)
