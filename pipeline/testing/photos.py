"""A COCO 2014 root of real photographs: crops, flips and scales of scikit-image's photos.

Generated noise hides what photographs expose (large smooth regions, saturated skies, strong
edges), so the tests that train the COCO models use these. scikit-image ships its sample
photos inside the wheel: nothing is downloaded.

    <root>/annotations/captions_{train,val}2014.json   (official schema, five captions each)
    <root>/train2014/COCO_train2014_<12-digit id>.jpg    (odd sizes; some grayscale)
    <root>/val2014/...
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data.images import encode_jpeg
from pipeline.testing.coco import FakeImage, write_coco_root

# (skimage.data function, what it shows) for every photograph bundled with scikit-image.
PHOTOS = [
    ("astronaut", "an astronaut in a white suit in front of a flag"),
    ("brick", "a brick wall"),
    ("camera", "a man with a camera on a tripod"),
    ("cell", "a cell under a microscope"),
    ("chelsea", "a ginger cat lying down"),
    ("clock", "a clock on a wall"),
    ("coffee", "a cup of coffee on a saucer"),
    ("coins", "old coins on a table"),
    ("grass", "a patch of grass"),
    ("gravel", "gravel on the ground"),
    ("hubble_deep_field", "galaxies in the night sky"),
    ("immunohistochemistry", "a stained tissue sample"),
    ("microaneurysms", "the back of an eye"),
    ("moon", "the surface of the moon"),
    ("page", "a printed page of text"),
    ("retina", "a photograph of a retina"),
    ("rocket", "a rocket on a launch pad"),
    ("text", "hand written text on a sign"),
    ("motorcycle", "a red motorcycle in a garage"),
]
TEMPLATES = [
    "a photo of {}",
    "{}, seen up close",
    "a picture showing {}",
    "there is {} in this image",
    "a cropped view of {}",
]


def _sources() -> list[tuple[np.ndarray, str]]:
    import skimage.data as data

    out = []
    for name, text in PHOTOS:
        pixels = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
        if pixels.dtype != np.uint8:
            pixels = (pixels * 255 if pixels.max() <= 1 else pixels).clip(0, 255).astype(np.uint8)
        if pixels.ndim == 3:
            pixels = pixels[..., :3]
        out.append((pixels, text))
    return out


def photo_variants(count: int, seed: int = 0) -> list[tuple[Image.Image, str]]:
    """``count`` distinct images: a random crop (40-100% of each side), a flip and a scale."""
    rng = np.random.default_rng(seed)
    sources = _sources()
    out = []
    for i in range(count):
        pixels, text = sources[i % len(sources)]
        h, w = pixels.shape[:2]
        ch, cw = (max(24, int(side * rng.uniform(0.4, 1.0))) for side in (h, w))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = pixels[y : y + ch, x : x + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        image = Image.fromarray(np.ascontiguousarray(crop))
        scale = rng.uniform(0.5, 1.2)  # odd sizes, as COCO's
        image = image.resize((max(24, int(cw * scale)), max(24, int(ch * scale))), Image.BICUBIC)
        out.append((image, text))
    return out


def make_photo_coco(root: Path, train: int, val: int, seed: int = 0) -> Path:
    """A local COCO root (download.coco.source: local) of ``train`` + ``val`` photographs."""
    variants = photo_variants(train + val, seed)
    splits = {
        split: [
            FakeImage(
                image_id=first + offset,
                jpeg=encode_jpeg(image, 92),
                width=image.width,
                height=image.height,
                captions=[template.format(text) for template in TEMPLATES],
            )
            for offset, (image, text) in enumerate(items)
        ]
        for split, first, items in (
            ("train2014", 1, variants[:train]),
            ("val2014", 100_001, variants[train:]),
        )
    }
    write_coco_root(root, splits, description="scikit-image photographs")
    return root


def binary_entropy_per_image(images: np.ndarray) -> float:
    """Mean over images of sum_pixels H(x): the least BCE a decoder can reach on grey values."""
    x = np.clip(images.astype(np.float64), 1e-12, 1 - 1e-12)
    h = -(x * np.log(x) + (1 - x) * np.log(1 - x))
    h[(images <= 0) | (images >= 1)] = 0.0
    return float(h.reshape(len(images), -1).sum(1).mean())
