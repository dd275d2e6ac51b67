"""Self-contained HTML pages of the runs: one per model (figures inlined as data URIs, training
curves and per-class accuracy as inline SVG, metrics and params) and one comparing the models.

Viewable offline and shareable as a single file: nothing is fetched when a page opens. So a
page inlines only what the pipeline wrote (:func:`read_owned`): a regular file under reports/
or metrics/, reached through no symlink (git stores symlinks: a hostile commit could point
one at ~/.ssh/id_rsa), no larger than report.max_file_bytes, and a figure must be a PNG.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os
import stat
from pathlib import Path

from pipeline.atomic import write_bytes
from pipeline.charts import bar_chart, line_chart
from pipeline.errors import PipelineError

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


def mean_std(value) -> tuple[float, float | None] | None:
    """(value, None) for a number, (mean, std) for {"mean": .., "std": ..}, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value), None
    if isinstance(value, dict) and isinstance(value.get("mean"), int | float):
        std = value.get("std")
        return float(value["mean"]), float(std) if isinstance(std, int | float) else None
    return None


def _cell(value) -> str:
    found = mean_std(value)
    if found is None:
        return html.escape(value if isinstance(value, str) else json.dumps(value))
    mean, std = found
    return f"{mean:.6g}" + (f" ± {std:.2g}" if std is not None else "")


def flatten(obj, prefix: str = "") -> list[tuple[str, object]]:
    """Dotted keys to leaves; a {"mean", "std"} dict is one leaf."""
    if isinstance(obj, dict) and mean_std(obj) is None:
        rows = []
        for key in obj:
            rows += flatten(obj[key], f"{prefix}.{key}" if prefix else str(key))
        return rows
    return [(prefix, obj)]


def _table(obj: dict) -> str:
    rows = []
    for key, value in flatten(obj):
        kind = "num" if mean_std(value) is not None else ""
        rows.append(f"<tr><td>{html.escape(key)}</td><td class='{kind}'>{_cell(value)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


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


def per_class_series(metrics: dict) -> dict[str, dict[str, tuple[float, float | None]]]:
    """Each per-class accuracy of an eval.json: {"per_class": {..}} blocks, and REAL_PER_CLASS."""
    series = {}
    for key, value in metrics.items():
        classes = value.get("per_class") if isinstance(value, dict) else None
        if key == REAL_PER_CLASS:
            classes = value
        if isinstance(classes, dict):
            name = key.removeprefix("judge_accuracy_").removesuffix("_per_class")
            found = {c: mean_std(v) for c, v in classes.items() if mean_std(v) is not None}
            series[name.removeprefix("on_").replace("_", " ")] = found
    return series


def frontier_series(rows: list[dict], prefix: str = "") -> tuple[dict, dict]:
    """A frontier.json's rows (pipeline/frontier.py) as one series of (FD, accuracy) points
    per temperature, in w order, and their labels ("w=1")."""
    series: dict[str, list] = {}
    labels: dict[str, list] = {}
    for row in sorted(rows, key=lambda r: (-r["temperature"], r["guidance"])):
        name = f"{prefix}T={row['temperature']:g}"
        series.setdefault(name, []).append((float(row["frechet"]), float(row["accuracy"])))
        labels.setdefault(name, []).append(f"w={row['guidance']:g}")
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
    metrics: dict[str, dict],
    params: dict[str, dict],
    curves: dict | None = None,
    per_class: dict | None = None,
    frontier: list[dict] | None = None,
) -> str:
    """``figures``: {name: PNG bytes}, as :func:`read_png` gives them."""
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


def write_report(
    path: Path,
    title: str,
    figures: dict[str, bytes],
    metrics: dict[str, dict],
    params: dict[str, dict],
    curves: dict | None = None,
    per_class: dict | None = None,
    frontier: list[dict] | None = None,
) -> None:
    page = render_report(title, figures, metrics, params, curves, per_class, frontier)
    write_bytes(path, page.encode())


def _row_prefix(file: str) -> str:
    """A metrics file's prefix to its rows: eval.json -> "", train/metrics.json -> "train: "."""
    stem = file.removesuffix(".json").removesuffix("metrics").rstrip("/")
    return "" if stem in ("", "eval") else f"{stem}: "


def results_rows(metrics: dict[str, dict[str, dict]]) -> dict[str, dict[str, object]]:
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
    metrics: dict[str, dict[str, dict]],
    links: dict[str, str],
    curves: dict[str, dict],
    per_class: dict[str, dict],
    frontiers: dict[str, list[dict]] | None = None,
) -> str:
    """The comparison page: one results table (a column per model, mean ± std where the
    metrics carry a spread), the models' test curves overlaid, and their per-class accuracy."""
    models = list(metrics)
    head = "".join(
        f"<th><a href='{html.escape(links[m])}'>{html.escape(m)}</a></th>"
        if m in links
        else f"<th>{html.escape(m)}</th>"
        for m in models
    )
    body = []
    for key, values in results_rows(metrics).items():
        cells = "".join(
            f"<td class='num'>{_cell(values[m])}</td>" if m in values else "<td></td>"
            for m in models
        )
        body.append(f"<tr><td>{html.escape(key)}</td>{cells}</tr>")
    parts = [f"<h2>Results</h2><table><tr><th>metric</th>{head}</tr>{''.join(body)}</table>"]
    names = list(dict.fromkeys(n for c in curves.values() for n in c))
    test = {
        n: {m: c[n]["test"] for m, c in curves.items() if "test" in c.get(n, {})} for n in names
    }
    series = {f"{m}: {s}": v for m, by in per_class.items() for s, v in by.items()}
    parts += _charts({f"test {n}": v for n, v in test.items() if v}, series)
    parts += frontier_chart({f"{m} ": rows for m, rows in (frontiers or {}).items() if rows})
    return _page(title, parts)
