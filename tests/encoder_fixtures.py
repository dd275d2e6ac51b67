"""Tiny randomly initialised CLIP and T5 checkpoints, saved like real ones (the builders live
in pipeline/testing/encoders.py, which the benchmarks share)."""

from pipeline.testing.encoders import TINY_CLIP, make_tiny_clip, make_tiny_t5
from pipeline.testing.inception import save_random_inception as make_random_inception

__all__ = ["TINY_CLIP", "make_random_inception", "make_tiny_clip", "make_tiny_t5"]
