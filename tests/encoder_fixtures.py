"""Tiny randomly initialised CLIP and T5 checkpoints, saved like real ones.

They load through the same code path as the real weights: open_clip.create_model with a
weights file (plus the architecture JSON, as any custom open_clip model), and
T5EncoderModel.from_pretrained on a Hugging Face folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from pipeline.random_inception import save_random_inception as make_random_inception

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def make_tiny_clip(folder: Path, seed: int = 0) -> dict:
    """Returns the embed.clip-vit-b-32 params section that loads it."""
    import open_clip
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(str(config))
    torch.manual_seed(seed)
    model = open_clip.create_model("tiny-clip", pretrained=None)
    weights = folder / "tiny-clip.safetensors"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights))
    return {"model": "tiny-clip", "weights": str(weights), "config_file": str(config)}


def make_tiny_t5(folder: Path, seed: int = 0) -> dict:
    """A 2-layer T5 encoder, d_model 16, with a WordPiece tokenizer borrowed from MiniLM."""
    from transformers import T5Config, T5EncoderModel

    from pipeline.encoders.hf import minilm_package_dir

    torch.manual_seed(seed)
    config = T5Config(vocab_size=30522, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
                      pad_token_id=0, decoder_start_token_id=0)  # fmt: skip
    T5EncoderModel(config).save_pretrained(folder)
    source = minilm_package_dir()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(source / name, folder / name)
    return {"weights": str(folder), "max_tokens": 64}


__all__ = ["make_random_inception", "make_tiny_clip", "make_tiny_t5"]
