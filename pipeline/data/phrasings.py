"""Text conditions for Fashion-MNIST images: each image gets a phrasing of its class.

Used by the text-conditioned model fmnist_text (the §2.1 CVAE with caption embeddings in
place of one-hot labels).
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.data.batches import InMemoryBatches
from pipeline.data.embeddings import caption_lookup
from pipeline.errors import PipelineError


class ClassPhrasings:
    """The caption embeddings of each class's phrasings; gives each image one of its class's.

    Training draws a phrasing per image and step (``generator``), so the model sees every
    wording of a class; evaluation uses a fixed one (image index modulo the class's count).
    """

    def __init__(self, embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int):
        order = torch.argsort(labels, stable=True)
        self.embeddings = embeddings[order]
        counts = torch.bincount(labels, minlength=num_classes)
        if bool((counts == 0).any()):
            missing = torch.nonzero(counts == 0).flatten().tolist()
            raise PipelineError(f"no phrasings for classes {missing}")
        self.counts = counts
        self.starts = torch.cumsum(counts, 0) - counts

    def to(self, device) -> ClassPhrasings:
        for name in ("embeddings", "counts", "starts"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def pick(
        self,
        labels: torch.Tensor,
        generator: torch.Generator | None = None,
        offset: torch.Tensor | None = None,
    ) -> torch.Tensor:
        counts = self.counts[labels]
        if generator is not None:
            u = torch.rand(len(labels), generator=generator).to(labels.device)
            within = (u * counts).long().clamp(max=counts - 1)
        else:
            within = offset % counts
        return self.embeddings[self.starts[labels] + within]


class PhrasingBatches(InMemoryBatches):
    """(images, labels) batches whose labels become caption embeddings of their class."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, phrasings: ClassPhrasings, batch_size: int
    ):
        super().__init__(
            images, labels, torch.arange(len(labels), device=labels.device), batch_size=batch_size
        )
        self.phrasings = phrasings

    def batches(self, generator: torch.Generator | None = None):
        for x, y, index in super().batches(generator):
            yield x, self.phrasings.pick(y, generator, offset=index)


def train_phrasings(embeddings: Path, rows: list[dict], num_classes: int) -> ClassPhrasings:
    """The embeddings of ``rows`` (the training phrasings of captions/fmnist.json: image_id is
    the class, caption_id the row in ``embeddings``), grouped by class."""
    row_of, vectors = caption_lookup(embeddings)
    missing = [r["caption_id"] for r in rows if r["caption_id"] not in row_of]
    if missing:
        raise PipelineError(
            f"{embeddings}: no embedding for captions {missing[:5]}; rerun the "
            "embed stage for fmnist"
        )
    index = torch.tensor([row_of[r["caption_id"]] for r in rows])
    labels = torch.tensor([r["image_id"] for r in rows])
    return ClassPhrasings(vectors[index], labels, num_classes)
