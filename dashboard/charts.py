"""Time-series charts for the dashboard's pages: lines (with an optional band), threshold rules and event markers.

Who calls it: :mod:`dashboard.model` for every metric family; any page that
draws a series over time against limits and events (carbon, GPU) may use
:func:`timeline`. It builds a Vega-Lite specification (the grammar Altair
writes) as a plain dict from small row lists the knowledge queries already
aggregated (a few hundred rows); the page draws it with
``st.vega_lite_chart``. Built through Altair's objects, the Model page's
seven charts took 4 to 6 s per drawing on this 2-core machine (Altair
builds and validates a schema object per encoding: 60,000 schema hashes
per drawing, measured with cProfile); as dicts they take milliseconds.

The rows (dicts):

- ``points``: ``time`` (datetime), ``value`` and ``series`` (the line's
  name); with ``band=True`` also ``low`` and ``high`` (a shaded band);
- ``thresholds``: ``value`` and ``label`` (what the rule means), plus any
  fields named in ``threshold_tooltip``;
- ``marks``: ``time`` and ``outcome`` (the marker's colour), plus any
  fields named in ``mark_tooltip``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

__all__ = ["OUTCOME_COLOURS", "timeline"]

#: Marker colours by outcome: green held, red failed or refused, grey neither, orange waiting on someone.
OUTCOME_COLOURS: dict[str, str] = {
    "succeeded": "#2ca02c", "pass": "#2ca02c", "approved": "#2ca02c", "proposed": "#1f77b4",
    "failed": "#d62728", "fail": "#d62728", "timed_out": "#d62728", "rejected": "#d62728", "expired": "#7f7f7f",
    "cancelled": "#7f7f7f", "suppressed": "#7f7f7f", "dry_run": "#9467bd", "inconclusive": "#ff7f0e",
    "awaiting_approval": "#ff7f0e", "pending": "#ff7f0e", "scheduled": "#ff7f0e", "running": "#17becf",
}
_TIME = {"field": "time", "type": "temporal", "format": "%Y-%m-%d %H:%M"}


def _rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """JSON values: datetimes as ISO 8601 (Vega-Lite parses them), NaN as null."""
    return [{k: (v.isoformat() if isinstance(v, datetime) else None if isinstance(v, float) and v != v else v)
             for k, v in row.items()} for row in rows]


def _field(name: str) -> dict[str, str]:
    """``"policy:N"`` → a nominal tooltip field; ``"value:Q"`` → quantitative."""
    field, _, kind = name.partition(":")
    return {"field": field, "type": {"Q": "quantitative", "T": "temporal"}.get(kind, "nominal")}


def timeline(points: Sequence[Mapping[str, Any]], *, y_title: str, start: datetime, end: datetime,
             band: bool = False, thresholds: Sequence[Mapping[str, Any]] = (), marks: Sequence[Mapping[str, Any]] = (),
             threshold_tooltip: Sequence[str] = (), mark_tooltip: Sequence[str] = (),
             height: int = 240) -> dict[str, Any]:
    """A layered Vega-Lite chart: one line per series over ``[start, end]``, threshold rules, event markers.

    The x axis always spans ``[start, end]`` (the page's range), so the
    charts of one page line up and a marker falls at the same place on each.

    >>> spec = timeline([{"time": datetime(2026, 1, 5), "value": 0.2, "series": "a"}], y_title="share",
    ...                 start=datetime(2026, 1, 4), end=datetime(2026, 1, 6), thresholds=[{"value": 0.3, "label": "x"}])
    >>> [layer["mark"]["type"] for layer in spec["layer"]]
    ['line', 'rule']
    """
    needed = ("time", "value", "series", *(("low", "high") if band else ()))
    for row in points[:1]:
        absent = [name for name in needed if name not in row]
        if absent:
            raise ValueError(f"the points of a timeline need the fields {list(needed)}; {absent} missing "
                             f"from {sorted(row)}")
    x = {"field": "time", "type": "temporal", "title": None,
         "scale": {"domain": [start.isoformat(), end.isoformat()]}}
    series = {"field": "series", "type": "nominal", "title": None, "legend": {"orient": "bottom"}}
    data = {"values": _rows(points)}
    layers: list[dict[str, Any]] = []
    if band:
        layers.append({"data": data, "mark": {"type": "area", "opacity": 0.2}, "encoding": {
            "x": x, "y": {"field": "low", "type": "quantitative"}, "y2": {"field": "high"}, "color": series,
            "tooltip": [_TIME, _field("series"), {**_field("low:Q"), "format": ".4g"},
                        {**_field("high:Q"), "format": ".4g"}]}})
    layers.append({"data": data, "mark": {"type": "line", "point": len(points) < 60}, "encoding": {
        "x": x, "y": {"field": "value", "type": "quantitative", "title": y_title}, "color": series,
        "tooltip": [_TIME, _field("series"), {**_field("value:Q"), "format": ".4g"}]}})
    if thresholds:
        layers.append({"data": {"values": _rows(thresholds)},
                       "mark": {"type": "rule", "color": "#d62728", "strokeDash": [6, 4], "strokeWidth": 1.5},
                       "encoding": {"y": {"field": "value", "type": "quantitative"}, "tooltip": [
                           _field("label"), *map(_field, threshold_tooltip), {**_field("value:Q"), "format": ".4g"}]}})
    if marks:
        known = sorted({str(row["outcome"]) for row in marks})
        colour = {"field": "outcome", "type": "nominal", "title": "decisions and runs", "legend": {"orient": "bottom"},
                  "scale": {"domain": known, "range": [OUTCOME_COLOURS.get(o, "#8c564b") for o in known]}}
        tooltip = [_TIME, *map(_field, mark_tooltip)]
        values = {"values": _rows(marks)}
        layers.append({"data": values, "mark": {"type": "rule", "opacity": 0.55, "strokeWidth": 2},
                       "encoding": {"x": x, "color": colour, "tooltip": tooltip}})
        layers.append({"data": values, "mark": {"type": "point", "filled": True, "size": 60, "shape": "triangle-down"},
                       "encoding": {"x": x, "y": {"value": 4}, "color": colour, "tooltip": tooltip}})
    return {"$schema": "https://vega.github.io/schema/vega-lite/v6.json", "height": height, "layer": layers,
            "resolve": {"scale": {"color": "independent"}}}
