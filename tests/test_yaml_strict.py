"""pipeline/yamlfile.py, the strict YAML reader of params.yaml and overlays: each hostile or
ambiguous input is one PipelineError line naming the file and the line, key or offset."""

from __future__ import annotations

import datetime

import pytest

from pipeline.errors import PipelineError
from pipeline.yamlfile import MAX_DEPTH, load_yaml, parse_yaml

# Nine levels of nine aliases: 9**9 (387 million) strings once expanded, from under 400 bytes.
ALIAS_BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)


def refused(data: bytes | str) -> str:
    """The one-line message parse_yaml gives for ``data`` (read as f.yaml)."""
    with pytest.raises(PipelineError) as info:
        parse_yaml(data, "f.yaml")
    message = str(info.value)
    assert message.startswith("f.yaml: not a readable YAML (") and "\n" not in message, message
    return message


def test_plain_yaml_reads_as_safe_load_reads_it():
    text = "a:\n  b: [1, 2.5, null, true, x, '']\n  c: {d: 2024-01-31}\ne: !!str 1\n"
    assert parse_yaml(text, "f.yaml") == {
        "a": {"b": [1, 2.5, None, True, "x", ""], "c": {"d": datetime.date(2024, 1, 31)}},
        "e": "1",
    }
    assert parse_yaml(text.encode(), "f.yaml") == parse_yaml(text, "f.yaml")
    assert parse_yaml("\ufeffa: 1\n".encode(), "f.yaml") == {"a": 1}  # a UTF-8 BOM
    assert parse_yaml(b"", "f.yaml") is None
    assert parse_yaml(b"# only a comment\n", "f.yaml") is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("a: &x 1\nb: *x\n", "(line 1, column 4: &x: anchors (&) and aliases (*) are not allowed"),
        ("a: &a [*a]\n", "(line 1, column 4: &a: anchors (&) and aliases (*) are not allowed"),
        ("a: *undefined\n", "(line 1, column 4: *undefined: anchors (&) and aliases (*) are not"),
        ("- &x {a: 1}\n- *x\n", "(line 1, column 3: &x: anchors"),
        (ALIAS_BOMB, "(line 1, column 4: &a: anchors (&) and aliases (*) are not allowed"),
        ("a: 1\nb:\n  <<: {a: 2}\n", "(line 3, column 3: merge key << in b: not allowed"),
        ("? [a, b]\n: 1\n", "(line 1, column 3: a key in the top level is not a plain value"),
        ("a: !!python/object/apply:os.system [ls]\n", "tag 'tag:yaml.org,2002:python/object/"),
        ("a: !!binary aGk=\n", "(line 1, column 4: tag 'tag:yaml.org,2002:binary' is not"),
        ("a: !local x\n", "(line 1, column 4: tag '!local' is not allowed)"),
        ("a: !!set {x}\n", "tag 'tag:yaml.org,2002:set' is not allowed"),
    ],
)
def test_anchors_aliases_merge_keys_and_other_tags_are_refused(data, message):
    assert message in refused(data)
    assert message in refused(data.encode())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            "train:\n  a:\n    epochs: 1\n    lr: 2\n    epochs: 3\n",
            "(line 5, column 5: duplicate key train.a.epochs (first at line 3; YAML would keep",
        ),
        ("a: 1\nb: 2\na: 3\n", "(line 3, column 1: duplicate key a (first at line 1;"),
        ("x: [{k: 1}, {k: 2, k: 3}]\n", "duplicate key x[1].k (first at line 1;"),
        ("{1: a, true: b}\n", "duplicate key True (first at line 1;"),  # one key to Python
        ('a: {"x\\ny": 1, "x\\ny": 2}\n', "duplicate key a.x\\ny (first"),  # still one line
    ],
)
def test_a_duplicate_key_is_refused_with_its_dotted_name_and_lines(data, message):
    assert message in refused(data)


def test_nesting_stops_at_the_limit_before_python_recursion_could():
    ok = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    value = parse_yaml(ok, "f.yaml")
    for _ in range(MAX_DEPTH - 1):
        (value,) = value
    assert value == []
    deeper = f"(line 1, column {MAX_DEPTH + 1}: nested too deeply: more than 64 levels)"
    assert deeper in refused("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    assert deeper in refused("[" * 200_000)
    block = "".join(f"{'  ' * i}k{i}:\n" for i in range(MAX_DEPTH + 1)) + "  " * 65 + "v: 1\n"
    assert "(line 65, column 129: nested too deeply" in refused(block)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"a: caf\xe9\n", "(byte 0xe9 at offset 6 is not UTF-8)"),
        ("a: café\n".encode("utf-16"), "(NUL byte at offset 3)"),
        (b"a: 1\n\0", "(NUL byte at offset 5)"),
        ("a: 1\n\0", "(NUL character at offset 5)"),
        ("a: \x07\n", "(character #x0007 at character offset 3: special characters are not"),
        ("a: \udc80\n", "(character #xdc80 at character offset 3: special characters are not"),
        ("a: [1, 2\nb: 3\n", "(line 2, column 2: while parsing a flow sequence; expected ','"),
        ("a:\n\t- 1\n", "(line 2, column 1: while scanning for the next token; found character"),
        ("a: 1\n---\nb: 2\n", "(line 2, column 1: expected a single document in the stream;"),
        ("a: " + "9" * 5000 + "\n", "(line 1, column 4: Exceeds the limit (4300 digits)"),
        ("a: 2024-02-30\n", "(line 1, column 4: day is out of range for month)"),
    ],
)
def test_bytes_that_are_not_yaml_text_are_one_line_with_the_place(data, message):
    assert message in refused(data)


def test_a_file_is_read_only_up_to_its_bound(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("judge: {epochs: 2}\n")
    assert load_yaml(path) == {"judge": {"epochs": 2}}
    with pytest.raises(PipelineError, match=rf"^{path}: not a readable params file \(over 10 "):
        load_yaml(path, "params file", max_bytes=10)
    zero = tmp_path / "zero.yaml"
    zero.symlink_to("/dev/zero")  # endless: only max_bytes + 1 are read
    with pytest.raises(PipelineError, match=rf"^{zero}: not a readable YAML \(over 4,000,000 "):
        load_yaml(zero)
    missing = tmp_path / "missing.yaml"
    with pytest.raises(PipelineError, match=rf"^{missing}: not a readable overlay \(No such "):
        load_yaml(missing, "overlay")
    path.write_bytes(b"judge:\n  epochs: 2\n  epochs: 2\n")
    with pytest.raises(PipelineError, match=rf"^{path}: not a readable YAML \(line 3, column 3"):
        load_yaml(path)
