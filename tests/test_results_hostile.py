"""Hostile and broken metrics never reach the docs, and never end in a traceback.

The real `scripts/results_table.py` runs in a copy of this repository's metrics/, reports/,
README.md, docs/results.md and params.yaml, with one file made hostile: a string that would be
a Markdown link, an <img> tag, a table cell break, a newline or the README block's own end
marker; a folder under metrics/ that is no model; NaN, inf, a string for a number, truncated
JSON, `null`, deep nesting, a Latin-1 byte; a duplicated guidance w. Each is escaped on the
page, ignored, or one `error:` line naming the file and the key (exit 1) with nothing written.
`t2i report` and the guidance `t2i cas` reads back hold the same way.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.config import load_params
from pipeline.errors import PipelineError
from pipeline.frontier import read_chosen_guidance
from pipeline.report import md_escape
from stages.cli import app

from .conftest import one_error_line

REPO = Path(__file__).resolve().parents[1]
END = "<!-- results:end -->"
HOSTILE = "S](http://e.vil)<img src=x>|a\n<!-- results:end -->"  # a class name, 50 chars
FOLDER = "zz](e.vil) <img src=x> | b <!-- results:end -->"  # a folder name: no slash
UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """What the results are made from, copied; the library linked (the script imports it)."""
    for folder in ("metrics", "reports"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    for name in ("params.yaml", "README.md", "scripts/results_table.py", "docs/results.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / "pipeline").symlink_to(REPO / "pipeline")
    return tmp_path


def script(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(root / "scripts" / "results_table.py"), *args],
        capture_output=True,
        text=True,
        cwd=root,
    )


def published(root: Path) -> tuple[bytes, bytes]:
    return (root / "README.md").read_bytes(), (root / "docs" / "results.md").read_bytes()


def edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def rename_class(node, old: str, new: str):
    """Every key ``old`` of every mapping in ``node`` renamed to ``new``, in place."""
    if isinstance(node, dict):
        if old in node:
            node[new] = node.pop(old)
        for value in node.values():
            rename_class(value, old, new)
    elif isinstance(node, list):
        for value in node:
            rename_class(value, old, new)


def test_a_hostile_class_name_is_escaped_on_the_page(tree: Path):
    for path in (tree / "metrics").glob("*/eval.json"):
        edit(path, lambda ev: rename_class(ev, "Sandal", HOSTILE))
    done = script(tree, "--write")
    assert done.returncode == 0, done.stderr
    page = (tree / "docs" / "results.md").read_text()
    assert "<img" not in page and END not in page
    assert not re.search(r"(?<!\\)\]\(http", page)  # no link: its bracket is escaped
    shown = md_escape(HOSTILE)
    assert shown in page and "\\](http://e.vil)&lt;img src=x&gt;\\|a &lt;\\!--" in shown
    row = next(line for line in page.splitlines() if line.startswith(f"| {shown} |"))
    header = next(line for line in page.splitlines() if line.startswith("| class |"))
    assert len(UNESCAPED_PIPE.findall(row)) == len(UNESCAPED_PIPE.findall(header))  # no new cell
    assert script(tree, "--check").returncode == 0


def test_a_hostile_figure_name_is_escaped_and_its_link_encoded(tree: Path):
    name = "x](e.vil)<img src=x>|`y` <!-- results:end -->.png"
    shutil.copy(
        tree / "reports/fmnist_label/fig5_generated.png", tree / "reports/fmnist_label" / name
    )
    done = script(tree, "--write")
    assert done.returncode == 0, done.stderr
    page = (tree / "docs" / "results.md").read_text()
    assert "<img" not in page and END not in page and "`y`" not in page
    assert r"reports/fmnist\_label/x\](e.vil)&lt;img src=x&gt;\|\`y\` &lt;\!--" in page
    assert "(../reports/fmnist_label/x%5D%28e.vil%29%3Cimg%20src%3Dx%3E%7C%60y%60%20" in page


def test_a_folder_under_metrics_that_is_no_model_is_never_published(tree: Path):
    before = published(tree)
    for root in ("metrics", "reports"):
        shutil.copytree(tree / root / "fmnist_text_prior", tree / root / FOLDER)
    edit(  # the best held-out score: the brief's held-out row if it were read
        tree / "metrics" / FOLDER / "eval.json",
        lambda ev: ev["judge_accuracy_heldout_phrasings"]["overall"].update(mean=0.99),
    )
    done = script(tree, "--write")
    assert done.returncode == 0, done.stderr
    assert published(tree) == before  # nothing of it reached README or the page
    shutil.rmtree(tree / "metrics" / FOLDER)
    assert script(tree, "--write").returncode == 0 and published(tree) == before


def test_the_readme_block_must_be_one_block(tree: Path):
    """A README that already holds a second end marker (an old forged block) is refused, not
    kept: --check compares the one whole block, so nothing hides behind a marker."""
    readme = tree / "README.md"
    forged = readme.read_text().replace(END, f"{END}\n| forged | 1.000 |\n{END}", 1)
    readme.write_text(forged)
    for args in (("--write",), ("--check",)):
        done = script(tree, *args)
        assert done.returncode == 1
        assert done.stderr == (
            "error: README.md: expected exactly one <!-- results:begin --> ... "
            "<!-- results:end --> block for the results\n"
        )
    assert readme.read_text() == forged


def test_escaping_leaves_no_markup_and_no_marker():
    shown = md_escape("a|b\n[c](d) <e> `f` *g* _h_ \\i &amp; <!-- results:end -->")
    assert shown == (
        "a\\|b \\[c\\](d) &lt;e&gt; \\`f\\` \\*g\\* \\_h\\_ \\\\i &amp;amp; "
        "&lt;\\!-- results:end --&gt;"
    )


def _nan(ev):
    ev["test_nelbo_nats"] = float("nan")


def _dup(ev):
    ev["frontier"].append(ev["frontier"][0])


def _same_print(ev):
    ev["frontier"][1]["guidance"] = 1.0000001  # prints as 1, the w of frontier[2]


LABEL = "metrics/fmnist_label/eval.json"
DEEP = '{"a": ' * 65 + "1" + "}" * 65


@pytest.mark.parametrize(
    ("file", "change", "said"),
    [
        (LABEL, _nan, "test_nelbo_nats: Input should be a finite number (got NaN)"),
        (
            "metrics/cas/fmnist_label.json",
            lambda c: c.update(accuracy_on_real_test=float("inf")),
            "accuracy_on_real_test: Input should be a finite number (got Infinity)",
        ),
        (
            LABEL,
            lambda ev: ev["judge_accuracy_on_samples"]["overall"].update(mean="0.9"),
            'judge_accuracy_on_samples.overall.mean: Input should be a valid number (got "0.9")',
        ),
        (
            "metrics/judge/train/metrics.json",
            lambda m: m["test"].update(accuracy=True),
            "test.accuracy: Input should be a valid number (got true)",
        ),
        (LABEL, _dup, "frontier: the point (prior, w 0, T 1) appears twice"),
        (LABEL, _same_print, "frontier: the point (prior, w 1, T 1) appears twice"),
        (
            "metrics/cas/fmnist_text.json",
            lambda c: c["frontier"].append(c["frontier"][3]),
            "frontier: the point (prior, w 2, T 1) appears twice",
        ),
        (
            LABEL,
            lambda ev: ev.update(frontier=ev["frontier"] * 1000),
            "frontier: List should have at most 64 items",
        ),
        (LABEL, lambda ev: ev["conditions"].update(guidance=-5), "conditions.guidance: Input"),
        ("metrics/cas/real.json", lambda c: c.clear(), "accuracy_on_real_test: Field required"),
    ],
)
def test_a_bad_value_is_one_line_naming_file_and_key(tree: Path, file, change, said):
    before = published(tree)
    edit(tree / file, change)
    done = script(tree, "--write")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(f"error: {file}: {said}"), done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert published(tree) == before


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (b'{"test_nelbo_nats": 237.3, "judge_acc', "not a readable metrics JSON (Unterminated"),
        (b"null", "(the whole file): expected a JSON object"),
        (DEEP.encode(), "not a readable metrics JSON (nested too deeply: more than 64 levels)"),
        ("[" * 100_000 + "]" * 100_000, "not a readable metrics JSON (nested too deeply"),
        (
            b'{"guidance_rule": "caf\xe9"}',
            "not a readable metrics JSON (byte 0xe9 at offset 22 is not UTF-8)",
        ),
    ],
)
def test_a_broken_file_is_one_line_naming_it(tree: Path, data, said):
    before = published(tree)
    path = tree / LABEL
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    for args in (("--write",), ("--check",), ()):
        done = script(tree, *args)
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr.startswith(f"error: {LABEL}: {said}"), done.stderr
        assert len(done.stderr.splitlines()) == 1, done.stderr
    assert published(tree) == before


# ---------------------------------------------------------------------------- t2i report

FRONTIER = "metrics/fmnist_label/frontier.json"


@pytest.fixture
def run_copy(tmp_path: Path, monkeypatch) -> Path:
    for folder in ("metrics/fmnist_label", "reports/fmnist_label"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _row(change):
    def apply(rows):
        change(rows[1])

    return apply


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (_row(lambda r: r.update(frechet=float("nan"))), "[1].frechet: Input should be a finite"),
        (_row(lambda r: r.update(accuracy=float("inf"))), "[1].accuracy: Input should be a finite"),
        (_row(lambda r: r.update(guidance="1e3")), "[1].guidance: Input should be a valid number"),
        (_row(lambda r: r.update(temperature=True)), "[1].temperature: Input should be a valid"),
        (_row(lambda r: r.update(accuracy=7)), "[1].accuracy: Input should be less than or equal"),
        (_row(lambda r: r.update(guidance=0.0)), "(the whole file): the point (prior, w 0, T 1)"),
        (lambda rows: rows.extend(rows * 10), "(the whole file): List should have at most 64"),
        (lambda rows: rows.clear() or rows.append(None), "[0]: expected a JSON object"),
    ],
)
def test_report_on_a_hostile_frontier_is_one_line(run_copy: Path, change, said):
    edit(run_copy / FRONTIER, change)
    line = one_error_line(CliRunner().invoke(app, ["report", "fmnist_label"]))
    assert line.startswith(f"error: {FRONTIER}: {said}"), line
    assert not (run_copy / "reports/fmnist_label/report.html").exists()


def test_report_on_a_null_frontier_is_one_line(run_copy: Path):
    (run_copy / FRONTIER).write_text("null")
    line = one_error_line(CliRunner().invoke(app, ["report", "fmnist_label"]))
    assert line.startswith(f"error: {FRONTIER}: (the whole file): expected a JSON list")


# ---------------------------------------------------------------------------- chosen guidance


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (-5, "Input should be greater than or equal to 0 (got -5)"),
        (1e308, "Input should be less than or equal to 20 (got 1e+308)"),
        (True, "Input should be a valid number (got true)"),
        ("1e3", 'Input should be a valid number (got "1e3")'),
        (float("nan"), "Input should be a finite number (got NaN)"),
    ],
)
def test_the_chosen_guidance_is_read_through_the_schema(tmp_path: Path, value, said):
    entry = load_params(REPO / "params.yaml").model("fmnist_conv")
    path = tmp_path / "eval.json"
    shutil.copy(REPO / "metrics/fmnist_conv/eval.json", path)
    chosen = json.loads(path.read_text())["conditions"]["guidance"]
    assert read_chosen_guidance(path, entry) == chosen  # as the committed run chose
    edit(path, lambda ev: ev["conditions"].update(guidance=value))
    with pytest.raises(PipelineError) as info:
        read_chosen_guidance(path, entry)
    assert str(info.value).startswith(f"{path}: conditions.guidance: {said}")
    assert "\n" not in str(info.value)


def test_a_deeply_nested_chosen_guidance_file_is_one_line(tmp_path: Path):
    entry = load_params(REPO / "params.yaml").model("fmnist_conv")
    path = tmp_path / "eval.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(PipelineError, match="nested too deeply"):
        read_chosen_guidance(path, entry)
