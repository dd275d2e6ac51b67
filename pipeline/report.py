"""Self-contained HTML pages of the runs: one per model (figures inlined as data URIs, training
curves and per-class accuracy as inline SVG, metrics and params) and one comparing the models.

Viewable offline and shareable as a single file: nothing is fetched when a page opens. So a
page inlines only what the pipeline wrote (:func:`read_owned`): a regular file under reports/
or metrics/, reached through no symlink (git stores symlinks: a hostile commit could point
one at ~/.ssh/id_rsa), no larger than report.max_file_bytes, and a figure must be a PNG.

Tables are rows of cells (:class:`Table`), rendered by :func:`html_table` here and by
:func:`markdown_table` for docs/results.md and the README (scripts/results_table.py); every
string a cell holds is escaped for its format (html.escape, :func:`md_escape`), so a name from
a metrics file or a folder is shown, never interpreted. The numbers come from files validated
by their schema (pipeline/metrics.py), formatted by its one ``cell``.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from pydantic import BaseModel, RootModel

from pipeline.atomic import write_bytes
from pipeline.charts import bar_chart, line_chart
from pipeline.errors import PipelineError
from pipeline.metrics import FrontierRows, MeanStd, cell, validate_metrics, w_text

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figcaption { color: #555; }
img { max-width: 100%; image-rendering: pixelated; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
"""

# Marks the page once laid out: every image decoded, and each chart's data area (page
# coordinates), curves and bars, so that a headless browser can check what is shown.
CHECK = """
window.addEventListener("load", () => {
  const images = [...document.images];
  const ok = images.filter((i) => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.images = images.length;
  document.body.dataset.imagesLoaded = ok;
  const charts = [...document.querySelectorAll("svg.chart")].map((svg) => {
    const r = svg.querySelector(".plot-area").getBoundingClientRect();
    return {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height,
            curves: [...svg.querySelectorAll("polyline.curve")].map((p) => [
              p.dataset.series, p.points.numberOfItems, p.getBoundingClientRect().width,
              getComputedStyle(p).stroke]),
            bars: svg.querySelectorAll("rect.bar").length};
  });
  document.body.dataset.charts = JSON.stringify(charts);
  document.body.dataset.pageHeight = document.documentElement.scrollHeight;
});
"""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CURVE_ORDER = ["loss", "recon", "kl"]  # the negative ELBO and its two terms first
REAL_PER_CLASS = "judge_accuracy_on_real_test_per_class"  # {class: accuracy}, when written
CHARTED = ("frontier",)  # top-level metrics a chart shows instead of table rows


# ---------------------------------------------------------------------------- tables
# A table is rows of cells; one function renders it as Markdown (docs/results.md, README)
# and one as HTML (report pages). Whatever a cell holds is escaped for its format, so a
# string from a metrics file or a folder name is shown, never interpreted.


@dataclass(frozen=True)
class Span:
    """Text shown as it is: ``code`` in a code font, ``href`` a link, ``num`` a number."""

    text: str
    code: bool = False
    href: str | None = None
    num: bool = False


class Raw(str):
    """Markup the program itself wrote ("**CAS**"): the one kind of text not escaped."""


Cell = str | Span | tuple  # a tuple: spans side by side (a name in code, then ", samples")


@dataclass
class Table:
    header: list[Cell]
    rows: list[list[Cell]]
    numeric_from: int = 1  # columns from this one hold numbers (right-aligned)


MD_SPECIAL = re.compile(r"([\\`*_\[\]|#!~{}])")
PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.,:/ -]*")  # a code span shows it literally


def md_escape(text: str) -> str:
    """``text`` as Markdown shows it literally, on one line, in a table cell or a sentence:
    markup characters backslash-escaped, <, > and & as entities (so no HTML tag and no
    ``<!-- results:end -->`` marker survives), line breaks as spaces."""
    text = html.escape(str(text), quote=False)
    text = MD_SPECIAL.sub(r"\\\1", text)
    return re.sub(r"[\r\n\u2028\u2029\x85\x0b\x0c]+", " ", text)


def _md_span(span: Cell) -> str:
    if isinstance(span, tuple):
        return "".join(_md_span(s) for s in span)
    if isinstance(span, Raw):
        return span
    if isinstance(span, str):
        return md_escape(span)
    text = f"`{span.text}`" if span.code and PLAIN.fullmatch(span.text) else md_escape(span.text)
    if span.href is not None:
        return f"[{text}]({quote(span.href, safe='/#')})"
    return text


def markdown(*parts: Cell) -> str:
    """Spans side by side as Markdown: a sentence quoting names and numbers."""
    return "".join(_md_span(part) for part in parts)


def md_image(alt: str, target: str) -> str:
    """A Markdown image: its alt text escaped, its target percent-encoded."""
    return f"![{md_escape(alt)}]({quote(target, safe='/')})"


def markdown_table(table: Table) -> list[str]:
    """The table's lines in GitHub Markdown."""
    n = len(table.header)
    align = "|" + "---|" * table.numeric_from + "---:|" * (n - table.numeric_from)
    lines = ["| " + " | ".join(markdown(c) for c in table.header) + " |", align]
    lines += ["| " + " | ".join(markdown(c) for c in row) + " |" for row in table.rows]
    return lines


def _html_span(span: Cell) -> str:
    if isinstance(span, tuple):
        return "".join(_html_span(s) for s in span)
    if isinstance(span, Raw):
        return span
    if isinstance(span, str):
        return html.escape(span)
    text = html.escape(span.text)
    text = f"<code>{text}</code>" if span.code else text
    if span.href is not None:
        return f"<a href='{html.escape(quote(span.href, safe='/#'))}'>{text}</a>"
    return text


def _is_num(cell: Cell) -> bool:
    return isinstance(cell, Span) and cell.num


def html_table(table: Table) -> str:
    """The table as HTML: a header row, and numbers right-aligned (class num)."""
    head = "".join(f"<th>{_html_span(c)}</th>" for c in table.header)
    rows = [f"<tr>{head}</tr>"] if head else []
    for row in table.rows:
        cells = "".join(
            f"<td class='num'>{_html_span(c)}</td>" if _is_num(c) else f"<td>{_html_span(c)}</td>"
            for c in row
        )
        rows.append(f"<tr>{cells}</tr>")
    return "<table>" + "".join(rows) + "</table>"


def number(value: MeanStd | float | None, digits: int | None = None) -> Span:
    """A number's cell (pipeline/metrics.py cell: "–", "mean ± std" or the value)."""
    return Span(cell(value, digits), num=value is not None)


def flatten(obj, prefix: str = "") -> list[tuple[str, object]]:
    """Dotted keys to leaves of a validated metrics object (or a params dict); a MeanStd is
    one leaf; keys the file did not set are left out, and so is an eval.json's ``frontier``
    (frontier.json's chart shows it)."""
    if isinstance(obj, RootModel):
        obj = obj.root
    if isinstance(obj, BaseModel) and not isinstance(obj, MeanStd):
        fields = sorted(k for k in type(obj).model_fields if k in obj.model_fields_set)
        obj = {k: getattr(obj, k) for k in fields if prefix or k not in CHARTED}
    if isinstance(obj, dict):
        rows = []
        for key, value in obj.items():
            rows += flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return rows
    if isinstance(obj, list) and obj and all(isinstance(v, BaseModel | dict) for v in obj):
        return [row for i, v in enumerate(obj) for row in flatten(v, f"{prefix}[{i}]")]
    return [(prefix, obj)]


def value_cell(value) -> Cell:
    """A leaf of :func:`flatten`: a number, a mean ± std, or text (a list as JSON)."""
    if isinstance(value, MeanStd) or (
        isinstance(value, int | float) and not isinstance(value, bool)
    ):
        return number(value)
    if value is None:
        return Span("–")
    return value if isinstance(value, str) else json.dumps(value)


def _table(obj) -> str:
    return html_table(Table([], [[key, value_cell(v)] for key, v in flatten(obj)]))


def _refuse(path: Path, why: str) -> PipelineError:
    return PipelineError(
        f"{path}: {why}; a report inlines only files the pipeline wrote under "
        "reports/ and metrics/: remove it and rerun the stage that writes it (dvc repro)"
    )


def read_owned(path: Path, roots: tuple[Path, ...], max_bytes: int) -> bytes:
    """The bytes of ``path`` if the pipeline could have written it: a relative path under one
    of ``roots`` (relative to the working folder, as reports/ and metrics/ are), no symlink on
    any part of it, a regular file of at most ``max_bytes``; else a one-line PipelineError."""
    path = Path(path)
    root = next((r for r in roots if Path(r) in path.parents), None)
    if root is None or path.is_absolute() or ".." in path.parts:
        raise _refuse(path, f"not under {' or '.join(f'{r}/' for r in roots)}")
    for k in range(1, len(path.parts) + 1):
        if Path(*path.parts[:k]).is_symlink():
            raise _refuse(path, f"{Path(*path.parts[:k])} is a symlink")
    if not path.resolve().is_relative_to(Path(root).resolve()):
        raise _refuse(path, f"resolves outside {root}/")
    try:  # O_NOFOLLOW: a symlink swapped in since the check is refused too
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise _refuse(path, f"not readable ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a folder, a FIFO, a device
        os.close(fd)
        raise _refuse(path, "not a regular file")
    with os.fdopen(fd, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _refuse(path, f"larger than report.max_file_bytes ({max_bytes} bytes)")
    return data


def read_png(path: Path, roots: tuple[Path, ...], max_bytes: int) -> bytes:
    """A figure to inline: :func:`read_owned`, and it starts with the PNG signature."""
    data = read_owned(path, roots, max_bytes)
    if not data.startswith(PNG_SIGNATURE):
        raise _refuse(Path(path), "not a PNG (no PNG signature)")
    return data


def read_curves(
    folder: Path, roots: tuple[Path, ...], max_bytes: int
) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """dvclive's per-epoch TSVs under folder/{train,test}/NAME.tsv -> {NAME: {split: points}}."""
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for path in sorted(Path(folder).glob("*/*.tsv")):
        text = read_owned(path, roots, max_bytes)
        try:
            rows = list(csv.DictReader(text.decode().splitlines(), delimiter="\t"))
            points = [(float(row["step"]), float(row[path.stem])) for row in rows]
        except (OSError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
            raise PipelineError(
                f"{path}: not a dvclive TSV with columns step and "
                f"{path.stem} ({exc!r}); rerun its train stage (dvc repro)"
            ) from None
        curves.setdefault(path.stem, {})[path.parent.name] = points
    order = [n for n in CURVE_ORDER if n in curves] + sorted(set(curves) - set(CURVE_ORDER))
    return {name: dict(sorted(curves[name].items(), reverse=True)) for name in order}


def per_class_series(ev) -> dict[str, dict[str, tuple[float, float | None]]]:
    """The per-class accuracies of a validated eval.json (pipeline/metrics.py), as the bar
    chart takes them: {series: {class: (value, std or None)}}."""
    views = ev.per_class_views() if ev is not None else {}
    return {
        name: {
            c: (v.mean, v.std) if isinstance(v, MeanStd) else (v, None) for c, v in classes.items()
        }
        for name, classes in views.items()
    }


def frontier_series(rows, prefix: str = "") -> tuple[dict, dict]:
    """A frontier.json's rows (validated as FrontierRows) as one series of (FD, accuracy)
    points per sampler and temperature ("T=1" for the prior, "expost T=1"), in w order, and
    their labels ("w=1")."""
    series: dict[str, list] = {}
    labels: dict[str, list] = {}
    checked = validate_metrics(rows, "frontier rows", FrontierRows).root
    order = {"prior": 0, "expost": 1}
    for row in sorted(checked, key=lambda r: (order[r.sampler], -r.temperature, r.guidance)):
        sampler = "" if row.sampler == "prior" else f"{row.sampler} "
        name = f"{prefix}{sampler}T={w_text(row.temperature)}"
        series.setdefault(name, []).append((row.frechet, row.accuracy))
        labels.setdefault(name, []).append(f"w={w_text(row.guidance)}")
    return series, labels


def frontier_chart(frontiers: dict[str, list[dict]]) -> list[str]:
    """The guidance frontier of each model ({prefix: rows}): judge accuracy against FD."""
    series, labels = {}, {}
    for prefix, rows in frontiers.items():
        s, t = frontier_series(rows, prefix)
        series.update(s)
        labels.update(t)
    if not series:
        return []
    chart = line_chart(
        "guidance frontier: judge accuracy against judge-feature FD (lower right: worse)",
        series,
        x_name="Fréchet distance of judge features",
        y_name="judge accuracy",
        width=560,
        plot_h=240,
        point_labels=labels,
    )
    return ["<h2>Guidance frontier</h2><div class='charts'>", chart, "</div>"]


def _charts(curves: dict, per_class: dict) -> list[str]:
    parts = []
    if curves:
        parts.append("<h2>Training curves</h2><div class='charts'>")
        parts += [line_chart(name, points, y_name="per image") for name, points in curves.items()]
        parts.append("</div>")
    if per_class:
        parts.append("<h2>Judge accuracy per class</h2>")
        parts.append(bar_chart("fraction the judge assigns to the intended class", per_class))
    return parts


def _page(title: str, body: list[str]) -> str:
    head = f"<meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style>"
    return "\n".join(
        [
            f"<!doctype html><html><head>{head}</head><body><h1>{html.escape(title)}</h1>",
            *body,
            f"<script>{CHECK}</script></body></html>",
        ]
    )


def render_report(
    title: str,
    figures: dict[str, bytes],
    metrics: dict[str, BaseModel],
    params: dict[str, dict],
    curves: dict | None = None,
    per_class: dict | None = None,
    frontier: list | None = None,
) -> str:
    """``figures``: {name: PNG bytes}, as :func:`read_png` gives them; ``metrics``: {file:
    its validated metrics} (pipeline/metrics.py); ``frontier``: frontier.json's rows."""
    parts = ["<h2>Figures</h2>"]
    for name, png in figures.items():
        if not png.startswith(PNG_SIGNATURE):
            raise PipelineError(f"figure {name}: not a PNG (no PNG signature)")
        data = base64.b64encode(png).decode()
        parts.append(
            f"<figure><img alt='{html.escape(name)}' "
            f"src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(name)}</figcaption></figure>"
        )
    parts += _charts(curves or {}, per_class or {})
    parts += frontier_chart({"": frontier} if frontier else {})
    parts.append("<h2>Metrics</h2>")
    for name, values in metrics.items():
        parts.append(f"<h3>{html.escape(name)}</h3>{_table(values)}")
    parts.append("<h2>Params</h2>")
    for name, values in params.items():
        parts.append(f"<h3>{html.escape(name)}</h3>{_table(values)}")
    return _page(title, parts)


def write_report(path: Path, title: str, figures: dict[str, bytes], *views, **named) -> None:
    """:func:`render_report`'s page, written atomically to ``path``."""
    write_bytes(path, render_report(title, figures, *views, **named).encode())


def _row_prefix(file: str) -> str:
    """A metrics file's prefix to its rows: eval.json -> "", train/metrics.json -> "train: "."""
    stem = file.removesuffix(".json").removesuffix("metrics").rstrip("/")
    return "" if stem in ("", "eval") else f"{stem}: "


def results_rows(metrics: dict[str, dict[str, BaseModel]]) -> dict[str, dict[str, object]]:
    """{model: {file: metrics}} -> {row name: {model: value}}, without per-class leaves (the
    chart shows those), the conditions last."""
    rows: dict[str, dict[str, object]] = {}
    for model, files in metrics.items():
        for file, values in files.items():
            for key, value in flatten(values):
                if ".per_class." not in key and not key.startswith(REAL_PER_CLASS):
                    rows.setdefault(_row_prefix(file) + key, {})[model] = value
    return dict(sorted(rows.items(), key=lambda row: row[0].startswith("conditions.")))


def render_index(
    title: str,
    metrics: dict[str, dict[str, BaseModel]],
    links: dict[str, str],
    curves: dict[str, dict],
    per_class: dict[str, dict],
    frontiers: dict[str, list] | None = None,
) -> str:
    """The comparison page: one results table (a column per model, mean ± std where the
    metrics carry a spread), the models' test curves overlaid, and their per-class accuracy."""
    models = list(metrics)
    head: list[Cell] = ["metric", *(Span(m, href=links.get(m)) for m in models)]
    rows = [
        [key, *(value_cell(values[m]) if m in values else "" for m in models)]
        for key, values in results_rows(metrics).items()
    ]
    parts = ["<h2>Results</h2>" + html_table(Table(head, rows))]
    names = list(dict.fromkeys(n for c in curves.values() for n in c))
    test = {
        n: {m: c[n]["test"] for m, c in curves.items() if "test" in c.get(n, {})} for n in names
    }
    series = {f"{m}: {s}": v for m, by in per_class.items() for s, v in by.items()}
    parts += _charts({f"test {n}": v for n, v in test.items() if v}, series)
    parts += frontier_chart({f"{m} ": rows for m, rows in (frontiers or {}).items() if rows})
    return _page(title, parts)
