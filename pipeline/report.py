"""One self-contained HTML page per run: figures (inlined as data URIs), metrics and params.

Viewable offline and shareable as a single file: nothing is fetched when it opens.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from pipeline.atomic import write_bytes

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figcaption { color: #555; }
img { max-width: 100%; image-rendering: pixelated; }
"""

# Marks the page once every image has decoded, so a headless browser can check it.
CHECK = """
window.addEventListener("load", () => {
  const images = [...document.images];
  const ok = images.filter((i) => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.images = images.length;
  document.body.dataset.imagesLoaded = ok;
});
"""


def _flatten(obj, prefix: str = "") -> list[tuple[str, object]]:
    if isinstance(obj, dict):
        rows = []
        for key in obj:
            rows += _flatten(obj[key], f"{prefix}.{key}" if prefix else str(key))
        return rows
    return [(prefix, obj)]


def _table(obj: dict) -> str:
    rows = []
    for key, value in _flatten(obj):
        cell = f"{value:.6g}" if isinstance(value, float) else html.escape(json.dumps(value))
        kind = "num" if isinstance(value, int | float) else ""
        rows.append(f"<tr><td>{html.escape(key)}</td><td class='{kind}'>{cell}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def render_report(title: str, figures: list[Path], metrics: dict[str, dict],
                  params: dict[str, dict]) -> str:  # fmt: skip
    head = f"<meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style>"
    parts = [f"<!doctype html><html><head>{head}</head><body><h1>{html.escape(title)}</h1>"]
    parts.append("<h2>Figures</h2>")
    for path in figures:
        data = base64.b64encode(Path(path).read_bytes()).decode()
        parts.append(f"<figure><img alt='{html.escape(path.name)}' "
                     f"src='data:image/png;base64,{data}'>"
                     f"<figcaption>{html.escape(path.name)}</figcaption></figure>")  # fmt: skip
    parts.append("<h2>Metrics</h2>")
    for name, values in metrics.items():
        parts.append(f"<h3>{html.escape(name)}</h3>{_table(values)}")
    parts.append("<h2>Params</h2>")
    for name, values in params.items():
        parts.append(f"<h3>{html.escape(name)}</h3>{_table(values)}")
    parts.append(f"<script>{CHECK}</script></body></html>")
    return "\n".join(parts)


def write_report(path: Path, title: str, figures: list[Path], metrics: dict[str, dict],
                 params: dict[str, dict]) -> None:  # fmt: skip
    write_bytes(path, render_report(title, figures, metrics, params).encode())
