"""Image grids as PNG (Pillow): one row per condition, an optional label left of each row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.atomic import atomic_path

PAD = 2


def image_grid(
    rows: list[np.ndarray], labels: list[str] | None = None, scale: int = 2, label_width: int = 90
) -> Image.Image:
    """rows: arrays (n, H, W) or (n, H, W, 3) with values in [0, 1]."""
    n_cols = max(len(r) for r in rows)
    height, width = rows[0].shape[1] * scale, rows[0].shape[2] * scale
    left = label_width if labels else 0
    canvas = Image.new(
        "RGB", (left + n_cols * (width + PAD) + PAD, len(rows) * (height + PAD) + PAD), "white"
    )
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for r, row in enumerate(rows):
        top = PAD + r * (height + PAD)
        if labels:
            draw.text((4, top + height // 2 - 6), labels[r], fill="black", font=font)
        for c, image in enumerate(row):
            pixels = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
            tile = Image.fromarray(pixels).convert("RGB").resize((width, height), Image.NEAREST)
            canvas.paste(tile, (left + PAD + c * (width + PAD), top))
    return canvas


def save_png(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
