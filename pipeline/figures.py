"""Image grids as PNG (Pillow): one row per condition, an optional label left of each row.

Labels are drawn in DejaVu Sans, a TrueType font (Debian's fonts-dejavu-core, which
scripts/setup.sh installs). Pillow's own default font (Aileron at 10 px, or the older bitmap
font) draws word spaces barely wider than letter gaps: "a cable knit sweater" reads as
"a cable knitsweater".
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.atomic import atomic_path
from pipeline.caption_text import drawable
from pipeline.errors import PipelineError

PAD = 2
LABEL_FONT = "DejaVuSans.ttf"  # Pillow finds it by name under the system font folders
LABEL_SIZE = 11  # pixels; a word space is 5 px, a gap between letters at most 2


@functools.cache
def label_font(name: str = LABEL_FONT, size: int = LABEL_SIZE) -> ImageFont.FreeTypeFont:
    """The TrueType font of row labels; a clear error if it is not installed."""
    try:
        return ImageFont.truetype(name, size)
    except OSError:  # no silent fallback: the default font loses the spaces between words
        raise PipelineError(
            f"TrueType font {name} not found (figure labels need it): "
            "install Debian's fonts-dejavu-core (scripts/setup.sh does), "
            "or DejaVu Sans from your system's packages"
        ) from None


def to_pixels(images: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 pixels, as every figure draws them."""
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def image_grid(
    rows: list[np.ndarray], labels: list[str] | None = None, scale: int = 2, label_width: int = 90
) -> Image.Image:
    """rows: arrays (n, H, W) or (n, H, W, 3) with values in [0, 1], or their uint8 pixels.
    The label column is label_width pixels wide, or wider where a label needs it."""
    n_cols = max(len(r) for r in rows)
    height, width = rows[0].shape[1] * scale, rows[0].shape[2] * scale
    left = 0
    if labels:  # one line each: Pillow's raqm layout fails on a line break
        labels = [drawable(text) for text in labels]
        font = label_font()
        left = max([label_width] + [int(font.getlength(text)) + 10 for text in labels])
    canvas = Image.new(
        "RGB", (left + n_cols * (width + PAD) + PAD, len(rows) * (height + PAD) + PAD), "white"
    )
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        top = PAD + r * (height + PAD)
        if labels:  # "lm": the text's left end, vertically centred on the row
            draw.text((4, top + height // 2), labels[r], fill="black", font=font, anchor="lm")
        for c, image in enumerate(row):
            pixels = image if image.dtype == np.uint8 else to_pixels(image)
            tile = Image.fromarray(pixels).convert("RGB").resize((width, height), Image.NEAREST)
            canvas.paste(tile, (left + PAD + c * (width + PAD), top))
    return canvas


def save_png(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
