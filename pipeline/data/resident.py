"""(image, caption embedding) pairs with every decoded image resident on the device.

``ShardCaptionPairs`` decodes every JPEG again each epoch on CPU workers, so on a fast GPU the
loader can bound a step. When the images fit on the device (uint8: 7,000 at 224 are 1.05 GB,
all 82,783 train2014 images 12.5 GB), ``ResidentCaptionPairs`` decodes each image once and
keeps it there as uint8; an epoch is then a permutation of (image, caption) pairs, gathered
and converted to float on the device, with no loader at all (train.<model>.resident_images).

Decoding uses ``torchvision.io.decode_jpeg(device="cuda")`` (nvJPEG) when torchvision is
installed and the device is a GPU, else PIL as the streamed loader does. nvJPEG may differ
from libjpeg by a grey level in a few pixels.

Order: a full permutation of the pairs by the training loop's generator (a better shuffle
than the streamed loader's buffer; the two orders differ). Under torchrun rank r takes every
WORLD_SIZE-th pair of the permutation.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.distributed as dist

from pipeline.data.embeddings import caption_lookup
from pipeline.data.pairs import Placement, decode_jpeg
from pipeline.data.shards import read_samples
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

DECODE_BATCH = 256  # JPEGs decoded per call: bounds the compressed bytes held at once


def gpu_jpeg_decoder(device: torch.device):
    """torchvision's batched nvJPEG decoder for ``device``, or None where it cannot run."""
    if device.type != "cuda":
        return None
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None

    def decode(jpgs: list[bytes]) -> list[torch.Tensor]:
        data = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpgs]
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)

    return decode


class ResidentCaptionPairs:
    """Batches of (images float [0, 1], caption embeddings) from uint8 images on the device."""

    def __init__(
        self,
        shards: list[Path],
        embeddings: Path,
        *,
        images: int,
        batch_size: int,
        placement: Placement = Placement(),
        gpu_decode: bool = True,
        key: str = "resident_images",
    ):
        if not shards:
            raise PipelineError("no WebDataset shards to train on; run coco_pack first")
        self.device, self.batch_size = torch.device(placement.device), batch_size
        self.channels_last = placement.channels_last
        row_of, vectors = caption_lookup(embeddings)
        decoder = gpu_jpeg_decoder(self.device) if gpu_decode else None
        self.gpu_decoded = decoder is not None
        self.images: torch.Tensor | None = None
        image_of, rows, pending, filled = [], [], [], 0

        def flush() -> None:
            nonlocal filled
            decoded = decoder(pending) if decoder else [decode_jpeg(j) for j in pending]
            if self.images is None:
                self.images = self._allocate(images, decoded[0].shape, key)
            for image in decoded:
                self.images[filled].copy_(image, non_blocking=True)
                filled += 1
            pending.clear()

        for sample in read_samples([Path(s) for s in shards]):
            meta = sample["json"]
            for caption_id in meta["caption_ids"]:
                row = row_of.get(int(caption_id))
                if row is None:
                    raise PipelineError(
                        f"caption {caption_id} of image {meta['image_id']} has no embedding; "
                        "re-run the embed stage for this dataset"
                    )
                image_of.append(filled + len(pending))
                rows.append(row)
            pending.append(sample["jpg"])
            if len(pending) == DECODE_BATCH:
                flush()
        if pending:
            flush()
        if filled != images:
            raise PipelineError(
                f"{shards[0].parent}: {filled} images in the shards, but the "
                f"index says {images}; rerun coco_pack"
            )
        self.image_of = torch.tensor(image_of, device=self.device)
        self.rows = torch.tensor(rows, device=self.device)
        self.vectors = vectors.to(self.device)
        log.info(
            "%d images (%.2f GB uint8) resident on %s, %s-decoded",
            filled,
            self.images.numel() / 1e9,
            self.device,
            "nvJPEG" if self.gpu_decoded else "PIL",
        )

    def _allocate(self, count: int, shape: torch.Size, key: str) -> torch.Tensor:
        need = count * shape.numel()
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if need > 0.8 * free:  # the model, its activations and Adam need the rest
                raise PipelineError(
                    f"{key}: {count} images of {tuple(shape)} need {need / 1e9:.1f} GB on "
                    f"{self.device}, over 80% of its {free / 1e9:.1f} GB free; set it to false "
                    "to stream them from the shards"
                )
        return torch.empty((count, *shape), dtype=torch.uint8, device=self.device)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def text_dim(self) -> int:
        return self.vectors.shape[1]

    def batches(self, generator: torch.Generator | None = None):
        """Shuffled when given the loop's generator (training), in shard order otherwise."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        if dist.is_available() and dist.is_initialized():
            order = order[dist.get_rank() :: dist.get_world_size()]
        order = order.to(self.device)
        memory = torch.channels_last if self.channels_last else torch.contiguous_format
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            x = self.images[self.image_of[index]].float().div_(255)
            yield x.contiguous(memory_format=memory), self.vectors[self.rows[index]]
