"""`t2i generate --prompts FILE -o FOLDER` (issue 27): one PNG per line named by its number and
a slug, a grid of all; a bad line is named by its number and the others are still written;
a hostile file (1 GB, a million lines, NUL bytes, invalid UTF-8) is one line and nothing is
written. On the small setting's trained models."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline.api import load, prompt_file_name, read_prompts
from pipeline.errors import PipelineError
from stages.cli import app

from .conftest import one_error_line
from .test_api import LABEL, TEXT, small_run, tiles


@pytest.fixture(scope="module")
def trained(finished_root_run):
    return small_run(finished_root_run)


PROMPTS = """# shoes first
white running shoes

a long summer dress
\u200b\u200b
  # an indented comment
a pair of jeans, dark blue, slim fit, with five pockets and a button fly
"""


def run(trained, prompts, folder, *extra):
    args = ["generate", "--model", str(trained.models / TEXT), "--prompts", str(prompts)]
    args += ["-o", str(folder), "-n", "2", "--seed", "5", "--params", str(trained.params), *extra]
    return CliRunner().invoke(app, args)


def test_one_bad_line_is_named_and_the_others_are_written(trained, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS)
    out = tmp_path / "out"
    result = run(trained, prompts, out)
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert errors == [  # the bad line by its number, then the summary
        f"error: {prompts} line 5: caption '\\u200b\\u200b' has no visible character",
        f"error: {prompts}: 1 line(s) failed (above); the rest are written",
    ]
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "0002-white-running-shoes.png",
        "0004-a-long-summer-dress.png",
        "0007-a-pair-of-jeans-dark-blue-slim-fit-with.png",
        "grid.png",
    ]
    m = load(trained.models / TEXT, trained.params)
    for name, caption in (
        ("0002-white-running-shoes.png", "white running shoes"),
        ("0004-a-long-summer-dress.png", "a long summer dress"),
    ):
        expected = m.generate([caption], n=2, seed=5)
        for got, want in zip(tiles(out / name, 2, 28), expected, strict=True):
            np.testing.assert_array_equal(got, np.asarray(want))
    assert Image.open(out / "grid.png").height == 3 * 58 + 2  # one row per written line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "prompts.txt"]


def test_the_error_lines_and_exit_code(trained, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a coat\n\n" + "x" * 3000 + "\n")
    result = run(trained, prompts, tmp_path / "o")
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {prompts} line 3: caption of 3,000 characters, more than 2,000; shorten it",
        f"error: {prompts}: 1 line(s) failed (above); the rest are written",
    ]
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["0001-a-coat.png", "grid.png"]


def sparse(path, size: int) -> None:
    with open(path, "wb") as handle:
        handle.truncate(size)


HOSTILE = [
    (
        "1 GB",
        lambda p: sparse(p, 2**30),
        "1,073,741,824 bytes, more than the 1,000,000 a prompts file may hold; split it",
    ),
    (
        "a million lines",
        lambda p: p.write_bytes(b"\n" * 1_000_000),
        "1,000,000 lines, more than the 10,000 a prompts file may hold; split it",
    ),
    (
        "NUL",
        lambda p: p.write_bytes(b"a coat\nboots\x00\n"),
        "line 2: a NUL byte at offset 12; a prompts file is UTF-8 text",
    ),
    (
        "Latin-1",
        lambda p: p.write_bytes(b"a coat\n\ncaf\xe9 shoes\n"),
        "line 3: byte 0xe9 at offset 11 is not UTF-8; save the file as UTF-8",
    ),
]


@pytest.mark.parametrize(("what", "make", "expected"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_prompts_file_is_one_line_and_nothing_is_written(
    trained, tmp_path, what, make, expected
):
    prompts = tmp_path / "prompts.txt"
    make(prompts)
    result = run(trained, prompts, tmp_path / "out")
    assert one_error_line(result) == f"error: {prompts}: {expected}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.txt"]


def test_the_size_is_checked_before_reading(tmp_path):
    """A 1 TB sparse file is refused from its size alone (reading it would take hours)."""
    prompts = tmp_path / "huge.txt"
    sparse(prompts, 2**40)
    with pytest.raises(PipelineError, match="1,099,511,627,776 bytes, more than"):
        read_prompts(prompts)
    assert os.stat(prompts).st_blocks == 0  # still sparse: nothing was written into it


def test_prompts_need_a_folder_and_exclude_caption(trained, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a coat\n")
    line = one_error_line(run(trained, prompts, tmp_path / "x.png"))
    assert line == f"error: -o {tmp_path / 'x.png'}: --prompts writes a folder; give -o FOLDER"
    line = one_error_line(run(trained, prompts, tmp_path / "o", "--caption", "a coat"))
    assert line == "error: conflicting options: --prompts, and --caption or --label"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.txt"]


def test_file_names_are_the_line_number_and_a_lowercase_ascii_slug_of_40_characters():
    assert prompt_file_name(3, "White Running-Shoes!") == "0003-white-running-shoes.png"
    assert prompt_file_name(12, "  café <script> ") == "0012-caf-script.png"
    assert prompt_file_name(7, "日本") == "0007.png"
    assert prompt_file_name(1, "a" * 100) == "0001-" + "a" * 40 + ".png"
    assert prompt_file_name(1, "../../etc/passwd") == "0001-etc-passwd.png"  # no path


def test_a_file_of_comments_only_is_one_line(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("# nothing\n\n   \n")
    with pytest.raises(PipelineError, match="no prompts \\(only blank lines and # comments\\)"):
        read_prompts(prompts)


def test_a_prompts_file_draws_expost_as_the_api_does(trained, tmp_path):
    """--sampler expost in --prompts mode: each line's PNG is the API's expost draw of that
    label at the same seed; a text model refuses it before anything is written."""
    prompts = tmp_path / "labels.txt"
    prompts.write_text("sneaker\nbag\n")
    out = tmp_path / "out"
    args = ["generate", "--model", str(trained.models / LABEL), "--prompts", str(prompts)]
    args += ["-o", str(out), "-n", "2", "--seed", "5", "--params", str(trained.params)]
    result = CliRunner().invoke(app, [*args, "--sampler", "expost"])
    assert result.exit_code == 0, result.output
    m = load(trained.models / LABEL, trained.params)
    for name, label in (("0001-sneaker.png", "sneaker"), ("0002-bag.png", "bag")):
        expected = m.generate([label], n=2, seed=5, sampler="expost")
        for got, want in zip(tiles(out / name, 2, 28), expected, strict=True):
            np.testing.assert_array_equal(got, np.asarray(want))
    line = one_error_line(run(trained, prompts, tmp_path / "text", "--sampler", "expost"))
    assert line.startswith(f"error: {trained.models / TEXT}: a text model; sampler expost")
    assert not (tmp_path / "text").exists()
