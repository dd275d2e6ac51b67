"""Inline SVG charts for the HTML report: line charts of the training curves and grouped bar
charts of per-class accuracy. Hand-written SVG, inlined in the HTML (which needs no xmlns),
so the page needs no plotting library and fetches nothing.

Every chart is an ``<svg class="chart">`` whose data area is a ``<rect class="plot-area">``;
the legend and the axis labels lie outside it, so only the curves and bars are drawn inside.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"]
LEFT, RIGHT, BOTTOM = 58, 12, 40  # margins around the plot area, in pixels
CHAR = 6.5  # mean width of an 11 px sans-serif character, to lay out the legend


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering [low, high]."""
    if not high > low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    return [first + i * step for i in range(int(math.ceil((high - first) / step - 1e-9)) + 1)]


def _label(value: float) -> str:
    return f"{value:.4g}"


def _legend(names: list[str], width: int) -> tuple[str, int]:
    """Swatches and names below the title, wrapped to the width; and the plot area's top."""
    parts, x, y = [], LEFT, 28
    for i, name in enumerate(names):
        need = 20 + CHAR * len(name)
        if x > LEFT and x + need > width:
            x, y = LEFT, y + 15
        parts.append(
            f"<rect x='{x}' y='{y - 5}' width='12' height='4' "
            f"fill='{COLORS[i % len(COLORS)]}'/>"
            f"<text x='{x + 16}' y='{y}'>{html.escape(name)}</text>"
        )
        x += need + 12
    return "".join(parts), y + 12


@dataclass(frozen=True)
class _Box:
    """A chart's size in pixels, and the top and height of its plot area (its left and right
    edges are the LEFT and RIGHT margins)."""

    width: int
    height: int
    top: int
    plot_h: int


def _frame(title: str, box: _Box, y_ticks: list[float], y_of, y_name: str) -> list[str]:
    width, height, top, plot_h = box.width, box.height, box.top, box.plot_h
    plot_w = width - LEFT - RIGHT
    parts = [
        f"<svg class='chart' width='{width}' "
        f"height='{height}' viewBox='0 0 {width} {height}' font-size='11' "
        "font-family='sans-serif'>",
        f"<text x='{LEFT}' y='13' font-weight='bold'>{html.escape(title)}</text>",
        f"<rect class='plot-area' x='{LEFT}' y='{top}' width='{plot_w}' "
        f"height='{plot_h}' fill='white' stroke='#999'/>",
    ]
    for tick in y_ticks:
        y = y_of(tick)
        parts.append(
            f"<line x1='{LEFT}' x2='{LEFT + plot_w}' y1='{y:.1f}' y2='{y:.1f}' "
            f"stroke='#eee'/><text x='{LEFT - 4}' y='{y + 4:.1f}' "
            f"text-anchor='end'>{_label(tick)}</text>"
        )
    parts.append(
        f"<text transform='translate(12 {top + plot_h / 2:.0f}) rotate(-90)' "
        f"text-anchor='middle'>{html.escape(y_name)}</text>"
    )
    return parts


def line_chart(
    title: str,
    series: dict[str, list[tuple[float, float]]],
    x_name: str = "epoch",
    y_name: str = "",
    width: int = 360,
    plot_h: int = 170,
    point_labels: dict[str, list[str]] | None = None,
) -> str:
    """One polyline per series of (x, y) points; non-finite points are left out.
    ``point_labels``: a series' points are also marked, each with its label ("w=1")."""
    point_labels = {
        k: [t for (x, y), t in zip(series[k], v, strict=True) if math.isfinite(x + y)]
        for k, v in (point_labels or {}).items()
    }
    series = {
        k: [(x, y) for x, y in v if math.isfinite(x) and math.isfinite(y)]
        for k, v in series.items()
    }
    points = [p for v in series.values() for p in v]
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    y_ticks = nice_ticks(min(ys), max(ys))
    x_low, x_high = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    legend, top = _legend(list(series), width)
    plot_w = width - LEFT - RIGHT

    def x_of(x: float) -> float:
        return LEFT + 4 + (x - x_low) / (x_high - x_low) * (plot_w - 8)

    def y_of(y: float) -> float:
        return top + plot_h - (y - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * plot_h

    height = top + plot_h + BOTTOM
    parts = [*_frame(title, _Box(width, height, top, plot_h), y_ticks, y_of, y_name), legend]
    for tick in nice_ticks(x_low, x_high, 4):
        if x_low <= tick <= x_high:
            parts.append(
                f"<text x='{x_of(tick):.1f}' y='{top + plot_h + 14}' "
                f"text-anchor='middle'>{_label(tick)}</text>"
            )
    parts.append(
        f"<text x='{LEFT + plot_w / 2:.0f}' y='{height - 6}' "
        f"text-anchor='middle'>{html.escape(x_name)}</text>"
    )
    for i, (name, pts) in enumerate(series.items()):
        coords = " ".join(f"{x_of(x):.1f},{y_of(y):.1f}" for x, y in pts)
        parts.append(
            f"<polyline class='curve' data-series='{html.escape(name)}' "
            f"data-points='{len(pts)}' points='{coords}' fill='none' "
            f"stroke='{COLORS[i % len(COLORS)]}' stroke-width='2'/>"
        )
        for (x, y), text in zip(pts, point_labels.get(name, []), strict=False):
            tip = html.escape(f"{name}, {text}: {x_name} {_label(x)}, {y_name} {_label(y)}")
            parts.append(
                f"<circle class='point' cx='{x_of(x):.1f}' cy='{y_of(y):.1f}' r='3' "
                f"fill='{COLORS[i % len(COLORS)]}'><title>{tip}</title></circle>"
                f"<text x='{x_of(x) + 4:.1f}' y='{y_of(y) - 4:.1f}' font-size='9'>"
                f"{html.escape(text)}</text>"
            )
    return "".join(parts) + "</svg>"


def bar_chart(
    title: str,
    series: dict[str, dict[str, tuple[float, float | None]]],
    y_name: str = "accuracy",
    plot_h: int = 180,
) -> str:
    """Grouped bars on a 0..1 axis: series name -> {category: (value, std or None)}; a std
    draws a whisker of +-1 std. Categories keep the order they first appear in."""
    categories = list(dict.fromkeys(c for v in series.values() for c in v))
    if not categories:
        return ""
    bar = 10 if len(series) > 2 else 14
    group = max(bar * len(series) + 12, 34)
    width = max(LEFT + RIGHT + group * len(categories), 360)
    legend, top = _legend(list(series), width)
    height = top + plot_h + BOTTOM + 40  # room below for slanted class names
    y_ticks = [0.0, 0.25, 0.5, 0.75, 1.0]

    def y_of(y: float) -> float:
        return top + plot_h - max(0.0, min(y, 1.0)) * plot_h

    parts = [*_frame(title, _Box(width, height, top, plot_h), y_ticks, y_of, y_name), legend]
    for j, category in enumerate(categories):
        x0 = LEFT + 6 + j * group
        for i, (name, values) in enumerate(series.items()):
            if category not in values:
                continue
            value, std = values[category]
            x, y = x0 + i * bar, y_of(value)
            tip = f"{category}, {name}: {_label(value)}"
            tip += f" ± {_label(std)}" if std is not None else ""
            parts.append(
                f"<rect class='bar' x='{x}' y='{y:.1f}' width='{bar - 1}' "
                f"height='{top + plot_h - y:.1f}' fill='{COLORS[i % len(COLORS)]}'>"
                f"<title>{html.escape(tip)}</title></rect>"
            )
            if std:
                cx = x + (bar - 1) / 2
                parts.append(
                    f"<line x1='{cx}' x2='{cx}' y1='{y_of(value + std):.1f}' "
                    f"y2='{y_of(value - std):.1f}' stroke='black'/>"
                )
        parts.append(
            f"<text transform='translate({x0 + 2} {top + plot_h + 12}) rotate(35)'"
            f">{html.escape(category)}</text>"
        )
    return "".join(parts) + "</svg>"
