"""Small hand-written SVG line charts (no plotting library is installed).

Who calls it: :mod:`benchmarks.adaptation.report`, once per scenario: the
accuracy of each strategy over time, its actions marked as short vertical
ticks in its colour below the plot, and the true change points as dashed
grey lines.

>>> svg = line_chart({"a": [0.5, 0.9, 0.7]}, title="t", marks={"a": [2]}, changes=[2])
>>> svg.startswith("<svg") and svg.count("<polyline") == 1 and "stroke-dasharray" in svg
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

COLOURS = ("#7f7f7f", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e")


def line_chart(series: Mapping[str, Sequence[float]], *, title: str, marks: Mapping[str, Sequence[int]] | None = None,
               changes: Sequence[int] = (), y_range: tuple[float, float] | None = None, width: int = 900,
               height: int = 320, y_label: str = "accuracy") -> str:
    """An SVG document: one polyline per series over ticks 1..n, action marks per series, change lines."""
    marks = marks or {}
    left, right, top = 55, 150, 30
    mark_rows = len(series) * 7 + 8
    bottom = 35 + mark_rows
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max((len(v) for v in series.values()), default=1)
    values = [x for v in series.values() for x in v]
    lo, hi = y_range or (min(values, default=0.0), max(values, default=1.0))
    if hi <= lo:
        hi = lo + 1e-6

    def x(tick: float) -> float:
        return left + (tick - 1) / max(1, n - 1) * plot_w

    def y(value: float) -> float:
        return top + (hi - min(max(value, lo), hi)) / (hi - lo) * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{left}" y="18" font-size="13" font-weight="bold">{escape(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>']
    for i in range(5):  # y grid and labels
        value = lo + (hi - lo) * i / 4
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:.2f}</text>')
    step = max(1, round(n / 8 / 10) * 10)
    for tick in range(step, n + 1, step):  # x labels
        parts.append(f'<text x="{x(tick):.1f}" y="{top + plot_h + 14}" text-anchor="middle">{tick}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle">tick (simulated hour)</text>')
    parts.append(f'<text x="14" y="{top + plot_h / 2}" transform="rotate(-90 14 {top + plot_h / 2})" '
                 f'text-anchor="middle">{escape(y_label)}</text>')
    for change in changes:
        parts.append(f'<line x1="{x(change):.1f}" x2="{x(change):.1f}" y1="{top}" y2="{top + plot_h}" '
                     f'stroke="#999" stroke-dasharray="4 3"/>')
    for index, (name, data) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        points = " ".join(f"{x(k + 1):.1f},{y(v):.1f}" for k, v in enumerate(data))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.3" points="{points}"/>')
        row = top + plot_h + 20 + index * 7
        for tick in marks.get(name, ()):
            parts.append(f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{row}" y2="{row + 6}" stroke="{colour}" '
                         f'stroke-width="2"/>')
        legend_y = top + 12 + index * 16
        parts.append(f'<line x1="{left + plot_w + 12}" x2="{left + plot_w + 30}" y1="{legend_y - 4}" '
                     f'y2="{legend_y - 4}" stroke="{colour}" stroke-width="2"/>')
        count = len(marks.get(name, ()))
        parts.append(f'<text x="{left + plot_w + 35}" y="{legend_y}">{escape(name)} ({count} actions)</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
