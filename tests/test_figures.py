"""Row labels of the figure grids: a TrueType font whose word spaces stay visible."""

import numpy as np
import pytest
from PIL import ImageFont

from pipeline.errors import PipelineError
from pipeline.figures import image_grid, label_font


def blank_runs(ink: np.ndarray) -> list[int]:
    """Widths of the runs of ink-free columns between the first and last inked column."""
    cols = ink.any(axis=0)
    inked = np.flatnonzero(cols)
    runs, n = [], 0
    for has_ink in cols[inked[0] : inked[-1] + 1]:
        if not has_ink:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return sorted(runs, reverse=True)


def label_ink(grid, label_width: int) -> np.ndarray:
    return np.asarray(grid.convert("L"))[:, :label_width] < 128


def test_a_label_with_spaces_keeps_a_visible_gap_between_its_words():
    label = "a cable knit sweater"  # rendered "a cable knitsweater" by Pillow's default font
    grid = image_grid([np.zeros((2, 28, 28))], [label], label_width=150)
    runs = blank_runs(label_ink(grid, 150))
    words, letters = runs[: label.count(" ")], runs[label.count(" ") :]
    # each of the 3 word gaps is at least 4 px and twice the widest gap inside a word
    assert min(words) >= 4 and min(words) >= 2 * max(letters), runs


def test_the_label_column_widens_to_fit_a_long_label():
    label = "a black tee with short sleeves, long enough to overflow 90 pixels"
    grid = image_grid([np.zeros((1, 28, 28))], [label], label_width=90)
    left = grid.width - (56 + 2 + 2)
    assert left >= label_font().getlength(label) + 4
    ink = label_ink(grid, left)
    assert ink.any() and not ink[:, -4:].any()  # the text ends before the first image


def test_a_missing_truetype_font_fails_naming_what_to_install():
    with pytest.raises(PipelineError, match="NoSuchFont.ttf not found.*fonts-dejavu-core"):
        label_font("NoSuchFont.ttf")


def test_the_label_font_is_truetype_not_pillows_default():
    font = label_font()
    assert isinstance(font, ImageFont.FreeTypeFont) and "DejaVu" in font.getname()[0]
