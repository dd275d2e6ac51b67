"""Reading YAML that a user or a hostile commit can change (params.yaml, overlays): one line,
never a traceback, naming the file and the key or line, for a file that is too big, holds a
NUL byte or a byte that is not UTF-8, is not YAML, nests more than 64 levels, holds an anchor
or alias (``&x``, ``*x``), a merge key (``<<``), a duplicate key in one mapping, a key that is
not a plain value, or a tag other than the plain ones (``!!str``, ``!!int``, ``!!float``,
``!!bool``, ``!!null``, ``!!seq``, ``!!map``).

Anchors and aliases are refused while the document is composed, before anything is built: an
alias bomb (a few hundred bytes that expand to billions of nodes) or an alias to itself never
gets the chance to expand. Duplicate keys are refused as DVC refuses them: YAML keeps only the
last, so an edit that seems to change a value may change nothing.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent, CollectionStartEvent
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from pipeline.errors import PipelineError

MAX_BYTES = 4_000_000  # params.yaml is about 20 KB
MAX_DEPTH = 64  # params.yaml nests 5 deep; code that walks the result recursively stays safe

_TAG = "tag:yaml.org,2002:"
_PLAIN_TAGS = {f"{_TAG}{name}" for name in ("str", "int", "float", "bool", "null", "seq", "map")}


_NO_ANCHORS = "anchors (&) and aliases (*) are not allowed; write the value out"


def _refused(problem: str, mark) -> ComposerError:
    """What the strict reader refuses, at the place it was found (a YAMLError with a mark)."""
    return ComposerError(None, None, problem, mark)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors, aliases and non-plain tags as it composes, and stops
    at MAX_DEPTH levels before Python's recursion limit could be reached."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        mark = event.start_mark
        if event.anchor is not None:
            sign = "*" if isinstance(event, AliasEvent) else "&"
            raise _refused(f"{sign}{event.anchor}: {_NO_ANCHORS}", mark)
        tag = getattr(event, "tag", None)
        if tag not in (None, "!") and tag not in _PLAIN_TAGS:
            raise _refused(f"tag {tag!r} is not allowed", mark)
        nested = isinstance(event, CollectionStartEvent)
        if nested and self._depth >= MAX_DEPTH:
            raise _refused(f"nested too deeply: more than {MAX_DEPTH} levels", mark)
        self._depth += nested
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= nested

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except ValueError as exc:  # an int of 5,000 digits, a date such as 2024-02-30
            raise ConstructorError(None, None, str(exc), node.start_mark) from None


def _at(mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _check_keys(loader: _StrictLoader, root) -> None:
    """Refuse a merge key, a key that is not a plain value, and a key twice in one mapping,
    naming its dotted path and line; without recursion."""
    stack = [(root, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, SequenceNode):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node.value))
            continue
        if not isinstance(node, MappingNode):
            continue
        seen: dict[object, int] = {}
        for key_node, value_node in node.value:
            mark, inside = key_node.start_mark, path or "the top level"
            if key_node.tag == f"{_TAG}merge":
                raise _refused(f"merge key << in {inside}: not allowed; write the keys out", mark)
            if not isinstance(key_node, ScalarNode):
                raise _refused(f"a key in {inside} is not a plain value", mark)
            key = loader.construct_object(key_node)
            name = f"{path}.{key}" if path else str(key)
            if key in seen:  # 1, 1.0 and true are one key to Python, and so here
                first = f"first at line {seen[key]}; YAML would keep only the last"
                raise _refused(f"duplicate key {name} ({first})", mark)
            seen[key] = mark.line + 1
            stack.append((value_node, name))


def _reason(exc: yaml.YAMLError) -> str:
    """One line from a PyYAML error: where, then what."""
    if isinstance(exc, yaml.reader.ReaderError):
        char = exc.character
        shown = f"#x{char:04x}" if isinstance(char, int) else repr(char)
        return f"character {shown} at character offset {exc.position}: {exc.reason}"
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        what = "; ".join(part for part in (exc.context, exc.problem) if part)
        return f"{_at(mark)}: {what}" if mark else what
    return " ".join(str(exc).split())


def parse_yaml(data: bytes | str, where: str, what: str = "YAML") -> object:
    """``data`` parsed by the strict reader; anything it refuses is one PipelineError:
    '<where>: not a readable <what> (<line, column or offset>: <why>)'."""
    try:
        if isinstance(data, bytes):
            if b"\0" in data:
                raise ValueError(f"NUL byte at offset {data.index(bytes(1))}")
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad = data[exc.start]
                raise ValueError(f"byte 0x{bad:02x} at offset {exc.start} is not UTF-8") from None
        else:
            text = data
            if "\0" in text:
                raise ValueError(f"NUL character at offset {text.index(chr(0))}")
        loader = _StrictLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_keys(loader, node)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        reason = _reason(exc)
    except ValueError as exc:
        reason = str(exc)
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in reason)  # one line
    raise PipelineError(f"{where}: not a readable {what} ({shown})")


def load_yaml(path: Path, what: str = "YAML", max_bytes: int = MAX_BYTES) -> object:
    """The YAML in the file at ``path``, read by the strict reader: at most ``max_bytes`` read
    (a link to /dev/zero ends there); anything else is one PipelineError naming the file."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise PipelineError(f"{path}: not a readable {what} ({exc.strerror})") from None
    if len(data) > max_bytes:
        raise PipelineError(f"{path}: not a readable {what} (over {max_bytes:,} bytes)")
    return parse_yaml(data, str(path), what)
