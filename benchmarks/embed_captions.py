"""Caption embedding throughput: the embed stage's fast path vs a plain batch loop.

Same captions, same encoder object, same batch size. The plain loop keeps the captions in
order and pads each to the encoder's full length (77 tokens for CLIP), in float32; the fast
path sorts by length and pads each batch only to its longest caption (exact, see
pipeline/encoders). Captions are synthetic, COCO-like (8-18 words).

No pretrained CLIP or T5 weights exist on this machine, so CLIP ViT-B-32 and T5-small are
built with random weights at their real sizes and saved as checkpoints that load through the
product's code path; speed does not depend on the weight values. MiniLM is the real model.
The T5 checkpoint borrows MiniLM's WordPiece tokenizer (token counts close to T5's).

    python benchmarks/embed_captions.py                      # CPU, prints and saves JSON
    python benchmarks/embed_captions.py --device cuda --batch-size 1024
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.config import Embed, load_params
from pipeline.encoders import load_encoder
from pipeline.testing.encoders import make_random_clip, make_random_t5_small

VOCABULARY = (
    "a man woman child dog cat bus train plate of food table kitchen street city park bench "
    "sitting standing riding next to on top with in front the large small red white green "
    "two three people group skateboard surfboard wave beach snow field tennis pizza giraffe"
)
WORDS = VOCABULARY.split()  # noqa: SIM905 (a sentence reads better than a 46-item list)
REPO = Path(__file__).resolve().parents[1]


def coco_like_captions(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(8, 19, n)
    return [" ".join(rng.choice(WORDS, k)).capitalize() + "." for k in lengths]


def build_checkpoints(folder: Path) -> dict:
    return {
        "clip-vit-b-32": make_random_clip(folder / "clip", "ViT-B-32"),
        "t5-small": make_random_t5_small(folder / "t5"),
    }


def embed_params(sections: dict) -> Embed:
    """params.yaml's embed section, with the keys of ``sections`` in its encoders' own."""
    raw = load_params(REPO / "params.yaml").embed.model_dump(by_alias=True)
    for name, section in sections.items():
        raw[name] = {**raw[name], **section}
    return Embed.model_validate(raw)


def throughput(fn, captions, batch_size) -> tuple[float, np.ndarray]:
    fn(captions[:batch_size], batch_size)  # warm-up
    start = time.perf_counter()
    out = fn(captions, batch_size)
    return len(captions) / (time.perf_counter() - start), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--encoders", nargs="+", default=["clip-vit-b-32", "t5-small", "minilm"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/embed_captions.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    captions = coco_like_captions(args.captions)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        embed = embed_params(build_checkpoints(Path(tmp)))
        for name in args.encoders:
            encoder = load_encoder(name, embed.encoder(name), device)
            plain_rate, plain = throughput(encoder.encode_plain, captions, args.batch_size)
            fast_rate, fast = throughput(encoder.encode, captions, args.batch_size)
            results[name] = {
                "plain_captions_per_s": plain_rate,
                "fast_captions_per_s": fast_rate,
                "speedup": fast_rate / plain_rate,
                "max_abs_diff": float(np.abs(fast - plain).max()),
                "full_length_tokens": encoder.info.max_tokens,
                "mean_tokens": float(np.mean(encoder.token_counts(captions))),
            }
            row = results[name]
            speed = f"plain {plain_rate:8.0f}/s  fast {fast_rate:8.0f}/s  {row['speedup']:5.2f}x"
            print(f"{name:>14}: {speed}  max|diff| {row['max_abs_diff']:.1e}", flush=True)
            del encoder
    report = {
        "benchmark": "caption embedding, fast path vs plain full-length fp32 loop",
        "captions": args.captions,
        "batch_size": args.batch_size,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
