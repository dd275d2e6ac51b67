"""CLIP scores of caption-only samples, each as the literature defines it.

clip_s             CLIP-S of Hessel et al. (2021, "CLIPScore", eq. 1): w * max(cos(E_image,
                   E_caption), 0) per image-caption pair with w = 2.5, averaged over pairs.
                   In [0, 2.5]; the paper uses ViT-B/32.
clipscore_100      torchmetrics' CLIPScore: 100 * max(cos, 0) per pair, averaged. In [0, 100].
clip_r_precision   CLIP-R-precision (Park et al. 2021, after AttnGAN's R-precision): each
                   sample's true caption ranked by cosine among 100 candidates, itself and 99
                   others drawn without replacement from the held-out captions; top-1
                   accuracy, mean and std over independent draws. Chance is 1/100.

Scoring with the very CLIP a model was conditioned on inflates every one of them, so the
scorer is its own param (evaluate.<model>.clip_score; default ViT-L/14, OpenAI weights) and
its model and weights are written into the conditions of each value.
"""

from __future__ import annotations

from importlib.metadata import version

import numpy as np
import torch
from PIL import Image

HESSEL_W = 2.5  # CLIPScore's rescaling weight w (Hessel et al. 2021, §3)


def pair_cosines(e_image: torch.Tensor, e_text: torch.Tensor) -> torch.Tensor:
    """cos(E_image, E_caption) of each row pair of unit-length embeddings."""
    if len(e_image) != len(e_text):
        raise ValueError(f"{len(e_image)} images but {len(e_text)} captions")
    return (e_image * e_text).sum(dim=-1)


def clip_s(e_image: torch.Tensor, e_text: torch.Tensor) -> float:
    """Hessel et al.'s CLIP-S: mean over pairs of 2.5 * max(cos, 0)."""
    return float((HESSEL_W * pair_cosines(e_image, e_text).clamp(min=0)).mean())


def clipscore_100(e_image: torch.Tensor, e_text: torch.Tensor) -> float:
    """torchmetrics' CLIPScore: mean over pairs of 100 * max(cos, 0)."""
    return float((100 * pair_cosines(e_image, e_text).clamp(min=0)).mean())


def r_precision(
    e_image: torch.Tensor,
    e_text: torch.Tensor,
    *,
    candidates: int = 100,
    draws: int = 5,
    seed: int = 0,
    chunk: int = 64,
) -> dict:
    """Top-1 accuracy of each image's own caption (row i of ``e_text``) against
    ``candidates - 1`` others drawn without replacement from the rest (fewer when there are
    fewer); mean and std over ``draws``. A tie with the true caption counts as a miss."""
    n = len(e_text)
    if len(e_image) != n or n < 2:
        raise ValueError(
            f"R-precision needs as many images as captions, at least 2; got {len(e_image)} and {n}"
        )
    others = min(candidates - 1, n - 1)
    generator = torch.Generator().manual_seed(seed)
    true = pair_cosines(e_image, e_text)
    accuracies = []
    for _ in range(draws):
        hits = 0
        for start in range(0, n, chunk):
            rows = torch.arange(start, min(start + chunk, n))
            drawn = _draw_others(rows, n, others, generator)
            cos = torch.bmm(e_text[drawn], e_image[rows, :, None])[..., 0]  # (rows, others)
            hits += int((cos < true[rows, None]).all(dim=1).sum())
        accuracies.append(hits / n)
    return {
        "value": float(np.mean(accuracies)),
        "std": float(np.std(accuracies)),
        "draws": draws,
        "candidates": others + 1,
    }


def _draw_others(rows: torch.Tensor, n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """For each row i, k distinct indices of 0..n-1 other than i, uniformly (without
    replacement). Few captions: the k smallest of n random keys. Many: k draws from the n - 1
    others, redrawn for the rows that drew one twice (few: the chance is about k^2 / 2n)."""
    if n <= 50 * k:  # rejection would redraw most rows many times
        keys = torch.rand(len(rows), n, generator=generator)
        keys[torch.arange(len(rows)), rows] = 2.0  # never draw the true caption
        return keys.topk(k, dim=1, largest=False).indices
    drawn = torch.empty(len(rows), k, dtype=torch.long)
    todo = torch.arange(len(rows))
    while len(todo):
        pick = torch.randint(0, n - 1, (len(todo), k), generator=generator)
        pick += (pick >= rows[todo, None]).long()  # skip the true caption
        drawn[todo] = pick
        ordered = pick.sort(dim=1).values
        todo = todo[(ordered[:, 1:] == ordered[:, :-1]).any(dim=1)]
    return drawn


class ClipScorer:
    """Unit-length CLIP embeddings of images and captions with an open_clip model, loaded
    as the text encoder loads CLIP (a pretrained tag or a file), with open_clip's own
    evaluation preprocessing."""

    def __init__(self, spec, key: str, device: torch.device):
        from open_clip import get_model_preprocess_cfg
        from open_clip.transform import PreprocessCfg, image_transform_v2

        from pipeline.encoders.clip import ClipEncoder

        self.encoder = ClipEncoder(spec, key, device)
        cfg = PreprocessCfg(**get_model_preprocess_cfg(self.encoder.model))
        self.preprocess = image_transform_v2(cfg, is_train=False)
        self.device, self.model_name = device, spec.model

    @torch.no_grad()
    def image_embeddings(self, images: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Images (N, 3, H, W) in [0, 1], each through open_clip's evaluation transform
        (resize, centre crop, normalise) as a PIL image."""
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
        pixels = pixels.cpu().numpy()
        parts = []
        for start in range(0, len(pixels), batch_size):
            batch = [
                self.preprocess(Image.fromarray(np.ascontiguousarray(p)))
                for p in pixels[start : start + batch_size]
            ]
            parts.append(self.encoder.model.encode_image(torch.stack(batch).to(self.device)))
        return torch.nn.functional.normalize(torch.cat(parts).float(), dim=-1).cpu()

    @torch.no_grad()
    def text_embeddings(self, captions: list[str], batch_size: int) -> torch.Tensor:
        tokenize, model = self.encoder.tokenizer, self.encoder.model
        parts = [
            model.encode_text(tokenize(captions[i : i + batch_size]).to(self.device))
            for i in range(0, len(captions), batch_size)
        ]
        return torch.nn.functional.normalize(torch.cat(parts).float(), dim=-1).cpu()

    def conditions(self, images: int, image_size: int) -> dict:
        info = self.encoder.info
        return {
            "tool": f"open_clip {version('open_clip_torch')}",
            "model": self.model_name,
            "weights": info.weights_id,
            "weights_sha256": info.weights_sha256,
            "samples": images,
            "image_size": image_size,
        }

    def scores(
        self,
        e_samples: torch.Tensor,
        e_real: torch.Tensor,
        captions: list[str],
        batch_size: int,
        *,
        draws: int,
        seed: int,
        image_size: int,
    ) -> dict:
        """clip_s, clipscore_100 and clip_r_precision of samples against their captions, with
        the same numbers for the real images (a ceiling) and for captions shifted by one
        (a floor)."""
        e_text = self.text_embeddings(captions, batch_size)
        shifted = e_text.roll(-1, dims=0)
        base = self.conditions(len(e_samples), image_size)
        out = {}
        for name, fn, definition in (
            ("clip_s", clip_s, "Hessel et al. 2021 CLIP-S: mean of 2.5 * max(cos, 0)"),
            ("clipscore_100", clipscore_100, "torchmetrics CLIPScore: mean of 100 * max(cos, 0)"),
        ):
            out[name] = {
                "value": fn(e_samples, e_text),
                "real_images": fn(e_real, e_text),
                "mismatched_captions": fn(e_samples, shifted),
                "conditions": {**base, "definition": definition},
            }
        ranked = r_precision(e_samples, e_text, draws=draws, seed=seed)
        real = r_precision(e_real, e_text, draws=draws, seed=seed)
        out["clip_r_precision"] = {
            **ranked,
            "real_images": real["value"],
            "real_images_std": real["std"],
            "conditions": {
                **base,
                "definition": "top-1 of the true caption among 1 + "
                f"{ranked['candidates'] - 1} held-out captions, mean/std over draws",
            },
        }
        return out
