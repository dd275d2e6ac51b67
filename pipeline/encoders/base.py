"""What every text encoder offers: fast batched embedding, a plain baseline, and its identity.

The fast path (``encode``) is exact, not approximate:
- captions are sorted by token count, so each batch carries little padding;
- each batch is padded only to its own longest caption (``_embed_batch(..., fast=True)``);
  what that means per encoder, and why it is exact, is written beside each encoder;
- it runs under ``torch.inference_mode``, on a GPU with autocast at ``precision`` (bf16 by
  default; fp16, or fp32 for none: embed.precision). The CPU always runs fp32.

``encode_plain`` is the baseline of benchmarks/embed_captions.py and of the equivalence
tests: captions in order, each padded to the encoder's full length, float32.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from dataclasses import dataclass, field

import numpy as np
import torch


def library_versions(*names: str) -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in names}


@dataclass
class EncoderInfo:
    """Recorded in every embedding shard's metadata."""

    encoder: str
    weights_id: str
    weights_sha256: str
    dim: int
    pooling: str
    normalized: bool
    max_tokens: int
    libraries: dict = field(default_factory=dict)


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


class TextEncoder:
    info: EncoderInfo
    device: torch.device
    precision: str = "bf16"  # autocast dtype of the fast path on a GPU (AUTOCAST_DTYPES)

    def token_counts(self, captions: list[str]) -> list[int]:
        """Tokens per caption before any truncation."""
        raise NotImplementedError

    def _embed_batch(self, captions: list[str], fast: bool) -> torch.Tensor:
        raise NotImplementedError

    def _autocast(self, fast: bool):
        dtype = AUTOCAST_DTYPES[self.precision]
        if fast and self.device.type == "cuda" and dtype is not None:
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def encode(
        self, captions: list[str], batch_size: int = 256, counts: list[int] | None = None
    ) -> np.ndarray:
        """(N, dim) float32 embeddings, in the order of ``captions``. ``counts``: their
        ``token_counts`` when the caller has them already (tokenising is most of the CPU time)."""
        if counts is None:
            counts = self.token_counts(captions)
        order = np.argsort(np.asarray(counts), kind="stable")
        out = np.empty((len(captions), self.info.dim), dtype=np.float32)
        for start in range(0, len(captions), batch_size):
            index = order[start : start + batch_size]
            with self._autocast(fast=True):
                vectors = self._embed_batch([captions[i] for i in index], fast=True)
            out[index] = vectors.float().cpu().numpy()
        return out

    @torch.inference_mode()
    def encode_plain(self, captions: list[str], batch_size: int = 256) -> np.ndarray:
        parts = [
            self._embed_batch(captions[start : start + batch_size], fast=False).float().cpu()
            for start in range(0, len(captions), batch_size)
        ]
        return torch.cat(parts).numpy() if parts else np.empty((0, self.info.dim), np.float32)
