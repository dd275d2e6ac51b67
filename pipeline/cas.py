"""The training sets of the Classification Accuracy Score (stages/cas.py): samples of a model,
labelled by the class they were drawn for."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.data.captions import fmnist_caption_set
from pipeline.data.fmnist import LABELS
from pipeline.data.phrasings import train_phrasings
from pipeline.evaluate import sample_in_batches


def generated_training_set(
    model, conditioning: str, embeddings: Path | None, p, device, generator, guidance: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``p.samples_per_class`` samples of every class with guidance w, and their labels: under
    one-hot labels, or (``conditioning`` text) each class's training phrasings in turn, read
    from the ``embeddings`` folder."""
    labels = torch.arange(len(LABELS), device=device).repeat_interleave(p.samples_per_class)
    if conditioning == "label":
        conditions = F.one_hot(labels, len(LABELS)).float()
    else:
        rows = fmnist_caption_set()["train"]
        phrasings = train_phrasings(embeddings, rows, len(LABELS)).to(device)
        offset = torch.arange(len(labels), device=device)
        conditions = phrasings.pick(labels, offset=offset)
    images = sample_in_batches(model, conditions, generator, 1000, p.temperature, guidance)
    return images, labels
