"""WebDataset tar shards: the only module that writes or reads them.

Each sample is ``<key>.jpg`` + ``<key>.json`` (``SampleMeta``) with the zero-padded image id
as key. Each shard is written with webdataset's TarWriter to a temp file beside it, with
fixed mtimes and owner so that the same samples give byte-identical tars. A shard is
published (renamed into place) only once it is complete, flushed and verified; any exception
or signal that interrupts the writing deletes the temp file, so a reader never finds a
partial shard.
"""

from __future__ import annotations

import contextlib
import json
import os
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypedDict

import webdataset as wds

from pipeline.atomic import new_temp, publish, writing
from pipeline.errors import PipelineError

_TAR = {"user": "t2i", "group": "t2i", "mode": 0o444, "mtime": 0.0, "encoder": False}


class SampleMeta(TypedDict):
    """A sample's ``<key>.json``: coco_pack writes it, training and evaluation read it."""

    image_id: int
    file_name: str
    split: str  # train2014 | val2014
    original_size: list[int]  # [width, height] before resizing
    caption_ids: list[int]
    captions: list[str]


def decode_meta(raw: bytes | str) -> SampleMeta:
    """A sample's JSON as the tar holds it (webdataset yields its bytes)."""
    return json.loads(raw)


class _Shard:
    """One shard being written to its temp file; ``publish`` checks it, then renames it."""

    def __init__(self, path: Path):
        with writing(path):
            self.path, self.tmp = path, new_temp(path)
        self.handle = self.tmp.open("wb")
        self.writer = wds.TarWriter(self.handle, **_TAR)
        self.keys: list[str] = []
        self.size = 0

    def write(self, sample: dict) -> None:
        with writing(self.path):
            self.size += self.writer.write(sample)
        self.keys.append(sample["__key__"])

    def publish(self) -> Path:
        with writing(self.path):
            self.writer.close()
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
        expected = [f"{key}.{ext}" for key in self.keys for ext in ("jpg", "json")]
        try:
            with tarfile.open(self.tmp) as tar:
                names = tar.getnames()
        except (tarfile.TarError, OSError) as exc:
            names = [f"unreadable: {exc}"]
        if names != expected:
            raise PipelineError(
                f"{self.path}: written shard does not read back as its "
                f"{len(self.keys)} samples; not published"
            )
        publish(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        with contextlib.suppress(Exception):  # closed here, not at garbage collection
            self.writer.close()
        with contextlib.suppress(OSError):  # a full disk fails the flush: the file goes anyway
            self.handle.close()
        self.tmp.unlink(missing_ok=True)


def write_shards(
    samples: Iterable[dict], out_dir: Path, prefix: str, *, maxcount: int, maxsize: int
) -> list[Path]:
    """Write samples ``{"__key__", "jpg": bytes, "json": dict}`` to ``prefix-000000.tar``...

    A shard ends at ``maxcount`` samples or once it holds ``maxsize`` bytes (as webdataset's
    ShardWriter splits). No samples, no shard.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    finished: list[Path] = []
    shard: _Shard | None = None
    try:
        for sample in samples:
            if shard is not None and (len(shard.keys) >= maxcount or shard.size >= maxsize):
                finished.append(shard.publish())
                shard = None
            if shard is None:
                shard = _Shard(out_dir / f"{prefix}-{len(finished):06d}.tar")
            json_bytes = json.dumps(sample["json"], sort_keys=True).encode()
            shard.write({"__key__": sample["__key__"], "jpg": sample["jpg"], "json": json_bytes})
        if shard is not None:
            finished.append(shard.publish())
            shard = None
    finally:
        if shard is not None:  # interrupted: an exception, Ctrl-C, or SIGTERM (see stages/cli.py)
            shard.discard()
    return finished


def read_samples(paths: list[Path]) -> Iterator[dict]:
    """Samples of the given shards in order, as {"__key__", "jpg": bytes, "json": dict}."""
    dataset = wds.WebDataset([str(p) for p in paths], shardshuffle=False, empty_check=False)
    for sample in dataset:
        yield {
            "__key__": sample["__key__"],
            "jpg": sample["jpg"],
            "json": decode_meta(sample["json"]),
        }
