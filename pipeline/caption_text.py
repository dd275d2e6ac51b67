"""Captions are text on one line, wherever they enter: params.yaml, captions/fmnist.json and
the COCO annotations.

- A line break or tab (``\\n``, ``\\r``, ``\\t``, ``\\v``, ``\\f``, U+0085, U+2028, U+2029, and
  the whitespace around it) becomes one space, and the ends are stripped: a YAML folded caption
  (``- >``) or ``"a black tee\\n"`` is ``"a black tee"``.
- Any other control character (U+0000-U+001F, U+007F-U+009F) is removed.
- A lone surrogate (``"\\ud800"`` in JSON or YAML) is not text: it is refused, naming where.
- A caption with no visible character (only spaces, zero-width spaces, joiners or other format
  characters) is refused as an empty one is: wherever it enters, the CLI and the API too.

A caption that passed here draws in a figure (Pillow's raqm layout fails on a line break).
"""

from __future__ import annotations

import re
import unicodedata

from pipeline.errors import PipelineError

_BREAKS = re.compile(r"\s*[\t\n\v\f\r\x1c-\x1f\x85\u2028\u2029]\s*")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def one_line(text: str) -> str:
    """Line breaks and tabs as one space, other control characters removed, ends stripped."""
    return _CONTROLS.sub("", _BREAKS.sub(" ", text)).strip()


def caption_problem(text: str) -> str:
    """Why ``text`` cannot be a caption (after :func:`one_line`), or "" when it can."""
    found = _SURROGATE.search(text)
    if found:
        return f"holds a lone surrogate (U+{ord(found.group()):04X}), not valid Unicode text"
    return ""


def clean_caption(text: str, where: str, allow_empty: bool = False) -> str:
    """``text`` on one line; a PipelineError naming ``where`` when it is not text."""
    problem = caption_problem(text)
    if problem:
        raise PipelineError(f"{where}: caption {_shown(text)} {problem}")
    cleaned = one_line(text)
    if not cleaned and not allow_empty:
        raise PipelineError(f"{where}: caption {_shown(text)} is empty")
    if cleaned and not any(unicodedata.category(ch)[0] in "LNPS" for ch in cleaned):
        raise PipelineError(f"{where}: caption {_shown(text)} has no visible character")
    return cleaned


def drawable(text: str) -> str:
    """A figure label that always lays out: one line, a lone surrogate shown as U+FFFD."""
    return _SURROGATE.sub("\ufffd", one_line(text))


def _shown(text: str) -> str:
    return ascii(text[:80])  # escapes line breaks and surrogates: the message stays one line
