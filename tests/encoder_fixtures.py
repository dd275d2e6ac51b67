"""Tiny randomly initialised CLIP and T5 checkpoints, saved like real ones (the builders live
in pipeline/testing/encoders.py, which the benchmarks share), and what a text model's
config.json records of the encoder it was trained on."""

from pathlib import Path

import torch

from pipeline.config import load_params
from pipeline.encoders import load_encoder
from pipeline.testing.encoders import TINY_CLIP, make_tiny_clip, make_tiny_t5
from pipeline.testing.inception import save_random_inception as make_random_inception

__all__ = ["TINY_CLIP", "make_random_inception", "make_tiny_clip", "make_tiny_t5", "trained_on"]


def trained_on(encoder: str, params: Path, dataset: str = "fmnist") -> dict:
    """The config.json keys of a model of ``dataset`` conditioned on ``encoder``, trained on
    the weights ``params`` names (its ``data``, ``conditioning`` and encoder identity)."""
    info = load_encoder(encoder, load_params(params).embed.encoder(encoder), torch.device("cpu"))
    return {
        "data": dataset,
        "conditioning": encoder,
        "encoder_weights": info.info.weights_id,
        "encoder_sha256": info.info.weights_sha256,
    }
