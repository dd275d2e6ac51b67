"""Text-encoder registry: adding an encoder means adding one class and one line here.

Each class takes ``(spec, key, device)``: its params section, the params key of its weights
(for error messages), and the torch device. Modules load lazily: open_clip and transformers
are slow to import, and a stage needs one of them.
"""

from __future__ import annotations

import importlib

import torch

from pipeline.encoders.base import EncoderInfo, TextEncoder

ENCODERS = {
    "clip-vit-b-32": "pipeline.encoders.clip:ClipEncoder",
    "t5-small": "pipeline.encoders.hf:T5SmallEncoder",
    "minilm": "pipeline.encoders.hf:MiniLMEncoder",
}


def load_encoder(name: str, spec, device: torch.device) -> TextEncoder:
    """Build encoder ``name`` from its params section (``embed.<name>`` in params.yaml)."""
    module, cls = ENCODERS[name].split(":")
    return getattr(importlib.import_module(module), cls)(spec, f"embed.{name}.weights", device)


__all__ = ["ENCODERS", "EncoderInfo", "TextEncoder", "load_encoder"]
