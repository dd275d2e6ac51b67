"""(image, caption embedding) training pairs: WebDataset shards joined with the embedding cache.

Each image x each of its captions is one pair (paper §2.2: 83k images -> 415k pairs). The
embeddings table is read once, in the main process; DataLoader workers inherit it. Per epoch:

    shards, shuffled by an epoch seed -> split by node (DDP rank) and by worker
    -> tar samples -> one pair per caption -> shuffle buffer -> batches

The epoch seed is drawn from the training loop's generator, so the data order is a function
of the seed and the epoch: an interrupted run resumes with the same order.

Evaluation reads the same join in shard order, one pair per image, in batches:
``first_caption_batches``.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader

from pipeline.data.embeddings import caption_lookup
from pipeline.data.shards import decode_meta, read_samples
from pipeline.errors import PipelineError


def decode_jpeg(jpg: bytes) -> torch.Tensor:
    """(3, S, S) uint8 RGB tensor of a shard's JPEG."""
    image = np.asarray(Image.open(io.BytesIO(jpg)).convert("RGB"))
    return torch.from_numpy(image.copy()).permute(2, 0, 1)  # (3, S, S) uint8


@dataclass(frozen=True)
class HeldOutPairs:
    images: torch.Tensor  # (N, 3, S, S) float in [0, 1]
    conditions: torch.Tensor  # (N, D): the embedding of each image's first embedded caption
    captions: list[str]  # that caption's text


@dataclass(frozen=True)
class Placement:
    """Where a loader's batches land: the device, and whether their images are laid out
    channels-last there (for convolutions on CUDA)."""

    device: torch.device | str = "cpu"
    channels_last: bool = False


class ShardCaptionPairs:
    """Streams batches of (images float [0, 1], caption embeddings) for the training loop."""

    def __init__(
        self,
        shards: list[Path],
        embeddings: Path,
        *,
        pairs: int,
        batch_size: int,
        shuffle_buffer: int = 1000,
        workers: int = 0,
        placement: Placement = Placement(),
    ):
        if not shards:
            raise PipelineError("no WebDataset shards to train on; run coco_pack first")
        self.row_of, self.vectors = caption_lookup(embeddings)
        self.urls = [str(s) for s in shards]
        self.pairs, self.batch_size = pairs, batch_size
        self.shuffle_buffer, self.workers = shuffle_buffer, workers
        self.device = torch.device(placement.device)
        self.channels_last = placement.channels_last

    def __len__(self) -> int:
        return self.pairs

    @property
    def text_dim(self) -> int:
        return self.vectors.shape[1]

    def _explode(self, samples):
        for sample in samples:
            meta = decode_meta(sample["json"])
            image = decode_jpeg(sample["jpg"])
            for caption_id in meta["caption_ids"]:
                row = self.row_of.get(int(caption_id))
                if row is None:
                    raise PipelineError(
                        f"caption {caption_id} of image {meta['image_id']} has no embedding; "
                        "re-run the embed stage for this dataset"
                    )
                yield image, self.vectors[row]

    def loader(self, seed: int | None) -> DataLoader:
        stages = [wds.SimpleShardList(self.urls)]
        if seed is not None:
            stages.append(wds.detshuffle(bufsize=len(self.urls), seed=seed))
        stages += [wds.split_by_node, wds.split_by_worker, wds.tarfile_to_samples(), self._explode]
        if seed is not None:
            stages.append(wds.shuffle(self.shuffle_buffer, rng=random.Random(seed)))
        pipeline = wds.DataPipeline(*stages)
        return DataLoader(
            pipeline,
            batch_size=self.batch_size,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
        )

    def batches(self, generator: torch.Generator | None = None):
        """Shuffled when given the loop's generator (training), in shard order otherwise."""
        seed = (
            None if generator is None else int(torch.randint(2**31 - 1, (1,), generator=generator))
        )
        memory = torch.channels_last if self.channels_last else torch.contiguous_format
        for images, captions in self.loader(seed):
            x = images.to(self.device, non_blocking=True).float().div_(255)
            yield x.contiguous(memory_format=memory), captions.to(self.device, non_blocking=True)

    def first_caption_batches(self, limit: int, batch_size: int):
        """Up to ``limit`` images in shard order, each with its first caption that has an
        embedding (images with none are skipped), as HeldOutPairs of ``batch_size``: held-out
        images for evaluation, streamed so that memory does not grow with ``limit``."""
        images, rows, texts, seen = [], [], [], 0
        for sample in read_samples([Path(u) for u in self.urls]):
            if seen == limit:
                break
            meta = sample["json"]
            captions = zip(meta["caption_ids"], meta["captions"], strict=True)
            found = [(int(i), text) for i, text in captions if int(i) in self.row_of]
            if not found:
                continue
            images.append(decode_jpeg(sample["jpg"]).float() / 255)
            rows.append(self.row_of[found[0][0]])
            texts.append(found[0][1])
            seen += 1
            if len(images) == batch_size:
                yield HeldOutPairs(torch.stack(images), self.vectors[rows], texts)
                images, rows, texts = [], [], []
        if images:
            yield HeldOutPairs(torch.stack(images), self.vectors[rows], texts)
        if not seen:
            raise PipelineError(
                f"no images with embedded captions in {self.urls[0]}...: check "
                "the subset and that the embed stage ran"
            )
