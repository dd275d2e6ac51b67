"""WebDataset tar shards: the only module that writes or reads them.

Each sample is ``<key>.jpg`` + ``<key>.json`` with the image id as key. Shards are written
by webdataset's ShardWriter into a temp file each, renamed into place when complete, with
fixed mtimes and owner so that the same samples give byte-identical tars.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import webdataset as wds

from pipeline.atomic import publish


class _AtomicShardFiles:
    """Opener and post hook for ShardWriter: write ``name.tmp``, rename it when closed."""

    def __init__(self):
        self.handles: dict[str, object] = {}
        self.finished: list[Path] = []

    def open(self, name: str):
        handle = open(f"{name}.tmp", "wb")  # noqa: SIM115 (closed in done)
        self.handles[name] = handle
        return handle

    def done(self, name: str) -> None:
        handle = self.handles.pop(name)
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        publish(f"{name}.tmp", name)
        self.finished.append(Path(name))


def write_shards(samples: Iterable[dict], out_dir: Path, prefix: str, *, maxcount: int,
                 maxsize: int) -> list[Path]:  # fmt: skip
    """Write samples ``{"__key__", "jpg": bytes, "json": dict}`` to ``prefix-000000.tar``..."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = _AtomicShardFiles()
    pattern = str(out_dir / f"{prefix}-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=maxcount, maxsize=maxsize, opener=files.open,
                         post=files.done, verbose=0, mtime=0.0, user="t2i", group="t2i",
                         mode=0o444) as sink:  # fmt: skip
        for sample in samples:
            sink.write(
                {
                    "__key__": sample["__key__"],
                    "jpg": sample["jpg"],
                    "json": json.dumps(sample["json"], sort_keys=True).encode(),
                }  # fmt: skip
            )
    return files.finished


def read_samples(paths: list[Path]) -> Iterator[dict]:
    """Samples of the given shards in order, as {"__key__", "jpg": bytes, "json": dict}."""
    dataset = wds.WebDataset([str(p) for p in paths], shardshuffle=False, empty_check=False)
    for sample in dataset:
        yield {"__key__": sample["__key__"], "jpg": sample["jpg"],
               "json": json.loads(sample["json"])}  # fmt: skip
