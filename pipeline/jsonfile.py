"""Reading JSON that a user, a download or a hostile commit can change: one line, never a
traceback, for a file that is too big, not UTF-8, not JSON, or nested too deeply. (Lone
surrogates in captions are refused where captions enter: pipeline/caption_text.py.)"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.errors import PipelineError

MAX_BYTES = 64 * 2**20  # metrics, configs, caption sets: a few KB each
MAX_DEPTH = 64  # ours nest 5 deep at most; code that walks a JSON recursively stays safe


def _depth(value: object) -> int:
    """How deep lists and objects nest in ``value`` (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = node.values()
        elif not isinstance(node, list):
            continue
        deepest = max(deepest, depth)
        stack.extend((c, depth + 1) for c in node if isinstance(c, (dict, list)))
    return deepest


def parse_json(
    data: bytes | str,
    where: str,
    what: str = "JSON",
    hint: str = "",
    max_depth: int | None = MAX_DEPTH,
) -> object:
    """``data`` parsed; anything else is one PipelineError: '<where>: not a readable <what>
    (<why>)[; <hint>]'. ``max_depth`` None: no depth walk (a big file no code recurses into,
    such as COCO annotations; json itself still stops at Python's recursion limit)."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(text)
        if max_depth is not None and _depth(value) > max_depth:
            raise RecursionError
    except RecursionError:
        reason = "nested too deeply" + (f": more than {max_depth} levels" if max_depth else "")
    except UnicodeDecodeError as exc:
        reason = f"byte 0x{data[exc.start]:02x} at offset {exc.start} is not UTF-8"
    except ValueError as exc:
        reason = str(exc)
    else:
        return value
    raise PipelineError(
        f"{where}: not a readable {what} ({reason})" + (f"; {hint}" if hint else "")
    )


def read_json(
    path: str | Path, what: str = "JSON", hint: str = "", max_bytes: int = MAX_BYTES
) -> object:
    """The JSON in the file at ``path``: at most ``max_bytes`` read (a link to /dev/zero ends
    there), UTF-8, nested at most MAX_DEPTH deep; anything else is one PipelineError naming
    the file and what was expected."""
    tail = f"; {hint}" if hint else ""
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise PipelineError(f"{path}: not a readable {what} ({exc.strerror}){tail}") from None
    if len(data) > max_bytes:
        raise PipelineError(f"{path}: not a readable {what} (over {max_bytes:,} bytes){tail}")
    return parse_json(data, str(path), what, hint)
