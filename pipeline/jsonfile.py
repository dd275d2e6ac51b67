"""Reading JSON that a user, a download or a hostile commit can change: one line, never a
traceback, for a file that is too big, not UTF-8, not JSON, nested too deep, or holding a
lone surrogate (an escape such as \\ud800: JSON that decodes to no Unicode text)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pipeline.errors import PipelineError

MAX_BYTES = 64 * 2**20  # metrics, configs, caption sets: a few KB each
MAX_DEPTH = 64  # ours nest 5 deep at most; code that walks a JSON recursively stays safe
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _lone_surrogate(value: object) -> str | None:
    """Where in ``value`` a string (or key) holds a lone surrogate, as 'annotations[3].caption'
    plus the surrogate; None if it holds none. Without recursion."""
    stack: list[tuple[object, str]] = [(value, "")]
    while stack:
        node, where = stack.pop()
        if isinstance(node, dict):
            for key, child in node.items():
                name = key.encode("utf-8", "backslashreplace").decode()  # printable
                stack.append((key, f"{where}.<key {name}>" if where else f"<key {name}>"))
                stack.append((child, f"{where}.{name}" if where else name))
        elif isinstance(node, list):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(node))
        elif isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError as exc:
                return (
                    f"{where or 'the value'} holds a lone surrogate \\u{ord(node[exc.start]):04x}"
                )
    return None


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
        stack.extend((child, depth + 1) for child in node)
    return deepest


def parse_json(data: bytes | str, where: str, what: str = "JSON", hint: str = "") -> object:
    """``data`` parsed; anything else is one PipelineError: '<where>: not a readable <what>
    (<why>)[; <hint>]'."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(text)
        if _depth(value) > MAX_DEPTH:
            raise ValueError(f"nested more than {MAX_DEPTH} deep")
        surrogate = _lone_surrogate(value) if _SURROGATE_ESCAPE.search(text) else None
        if surrogate is not None:
            raise ValueError(f"{surrogate}, not Unicode text")
    except RecursionError:
        reason = f"nested more than {MAX_DEPTH} deep"
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
