"""The Model page: one model's drift, performance, fairness, GPU and carbon over time, its decisions and its versions.

Every chart spans the chosen range (last 24 hours, 7 days, 30 days, or all
that was observed), draws at most :data:`knowledge.model_timeline.MAX_POINTS`
points per series (downsampled in SQL), the thresholds of the policies that
select the model (:mod:`dashboard.thresholds`; hover: policy and term), and
every decision and action run of the range as a vertical marker coloured by
its outcome (hover: policy, action, status, run, verdict, evidence). Below
them, the version history: lineage (the version each was trained beside, the
run and policy that made it) and the champion/challenger numbers of the gate
that promoted or rejected it.

The model is picked in a select box kept in the address
(``?page=Model&model=credit-risk``), so the Fleet page links straight to it.
The page only reads; a family of metrics the model has none of in the range
is named with the sensor that would write it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
from sqlmodel import Session

from dashboard.charts import timeline
from dashboard.context import PageContext
from dashboard.navigation import MODEL_KEY
from dashboard.range_end import range_end
from dashboard.thresholds import Threshold, load_thresholds
from knowledge import queries
from knowledge import model_timeline as timeline_queries
from knowledge.model_timeline import DecisionMark, RunMark, SeriesPoint, VersionEntry
from knowledge.tables import ManagedModel
from mape.access import Identity
from mape.plan.explain import format_path, referenced_paths

RANGES: dict[str, timedelta | None] = {"last 24 hours": timedelta(days=1), "last 7 days": timedelta(days=7),
                                       "last 30 days": timedelta(days=30), "all": None}
DEFAULT_RANGE = "last 7 days"
#: Features drawn on the per-feature drift chart: those with the largest effect size in the range.
TOP_FEATURES = 5
GAPS = ("demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference",
        "equal_opportunity_difference", "accuracy_difference")
_MODEL_KEY = MODEL_KEY


@dataclass(frozen=True)
class Panel:
    """A chart of summary metrics (labels ``{}``): its title, metrics, y axis and who writes them."""

    title: str
    metrics: tuple[str, ...]
    y_title: str
    writer: str


PANELS: tuple[Panel, ...] = (
    Panel("Drift (overall)", ("drift.share_drifted", "drift.max_effect_size"), "share / effect size",
          "the drift sensor (drift.*)"),
    Panel("Performance", ("performance.accuracy", "performance.precision", "performance.recall", "performance.f1",
                          "performance.accuracy_drop", "performance.roc_auc", "performance.estimated_accuracy",
                          "performance.estimated_accuracy_drop", "performance.mae", "performance.rmse"),
          "score", "the performance sensor, once labels arrive (performance.*)"),
    Panel("GPU", ("gpu.utilization", "gpu.memory_used_fraction"), "fraction",
          "the GPU sensor, for models with a gpu section (gpu.*)"),
    Panel("Carbon intensity", ("carbon.intensity", "carbon.forecast_min", "carbon.forecast_mean"), "gCO2/kWh",
          "the carbon sensor, when carbon is configured (carbon.*)"),
)


def render(session: Session, identity: Identity, context: PageContext) -> None:
    st.title("Model")
    models = queries.models_by_name(session)
    if not models:
        st.info("No model is registered yet: models come from mape.yaml when the controller starts.")
        return
    model = _pick_model(models)
    range_name = st.segmented_control("Time range", list(RANGES), default=DEFAULT_RANGE, key="model_page_range")
    until = range_end(session)
    since = _since(session, model, RANGES[range_name or DEFAULT_RANGE], until)
    st.caption(f"{model.description or model.name} · owner {model.owner or '-'} · labels {model.labels or {}} · "
               f"{since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC")
    thresholds, problem = load_thresholds(Path(context.settings.policies_dir), model)
    if problem:
        st.warning(problem)
    assert model.id is not None
    decisions = timeline_queries.decision_marks(session, model.id, since=since, until=until)
    runs = timeline_queries.run_marks(session, model.id, since=since, until=until)
    marks = _marks(decisions, runs)
    st.caption(f"{len(decisions)} decision(s) and {len(runs)} action run(s) in the range, marked on every chart; "
               "dashed red lines are policy thresholds.")
    missing: list[str] = []
    for panel in PANELS[:1]:
        _panel(session, model.id, panel, since, until, thresholds, marks, missing)
    _feature_drift(session, model.id, since, until, marks, missing)
    for panel in PANELS[1:2]:
        _panel(session, model.id, panel, since, until, thresholds, marks, missing)
    _fairness(session, model.id, since, until, thresholds, marks, missing)
    for panel in PANELS[2:]:
        _panel(session, model.id, panel, since, until, thresholds, marks, missing)
    if missing:
        st.info("Nothing to draw in this range for: " + "; ".join(missing) + ".")
    _versions(session, model.id)


def _pick_model(models: dict[str, ManagedModel]) -> ManagedModel:
    """The model of the select box, first taken from ``?model=`` (the address keeps the choice)."""
    names = sorted(models)
    asked = st.query_params.get("model")
    if _MODEL_KEY not in st.session_state:
        st.session_state[_MODEL_KEY] = asked if asked in models else names[0]
    if asked is not None and asked not in models:
        st.warning(f"There is no model named {asked!r}; showing {st.session_state[_MODEL_KEY]}.")
    name = st.selectbox("Model", names, key=_MODEL_KEY)
    st.query_params["model"] = name
    return models[name]


def _since(session: Session, model: ManagedModel, span: timedelta | None, until: datetime) -> datetime:
    """Where the range starts: ``span`` before its end, but no earlier than the model's first signal (a range
    longer than the model's history would draw empty days); ``all``: the first signal."""
    assert model.id is not None
    metrics = [m for panel in PANELS for m in panel.metrics]
    first, _ = timeline_queries.observed_span(session, model.id, metrics)
    earliest = min(first, until - timedelta(hours=1)) if first is not None else until - timedelta(days=7)
    return earliest if span is None else max(until - span, earliest)


# --------------------------------------------------------------------------- markers


def _evidence(evidence: dict[str, Any]) -> str:
    """The values the decision's condition read, from its stored context: ``drift.share_drifted = 0.42; ...``."""
    when, snapshot = evidence.get("when"), evidence.get("context")
    if not isinstance(when, str) or not isinstance(snapshot, dict):
        return "-"
    shown = []
    for path in referenced_paths(when):
        value: Any = snapshot
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None and not isinstance(value, dict):
            shown.append(f"{format_path(path)} = {json.dumps(value, default=str)}")
    text = "; ".join(shown) or "-"
    return text if len(text) <= 240 else text[:237] + "..."


def _marks(decisions: list[DecisionMark], runs: list[RunMark]) -> list[dict[str, Any]]:
    rows = [{"time": d.time, "what": f"decision {d.id}", "policy": d.policy, "action": d.action,
             "outcome": d.status, "detail": (f"run {d.run_id}: {d.run_state}" + (f", verdict {d.verdict}"
                                                                                  if d.verdict else ""))
             if d.run_id is not None else d.reason or "-", "evidence": _evidence(d.evidence)} for d in decisions]
    rows += [{"time": r.started_at or r.created_at, "what": f"action run {r.id} (decision {r.decision_id})",
              "policy": r.policy, "action": r.action, "outcome": r.verdict or r.state,
              "detail": f"{r.state}" + (f", finished {r.finished_at:%Y-%m-%d %H:%M}" if r.finished_at else "")
              + (f": {r.message}" if r.message else ""), "evidence": "-"} for r in runs]
    return rows


_MARK_TOOLTIP = ("what:N", "policy:N", "action:N", "outcome:N", "detail:N", "evidence:N")


def _rules(thresholds: list[Threshold], metrics: dict[str, str]) -> list[dict[str, Any]]:
    """The thresholds on ``metrics`` (metric name to the series it is drawn against)."""
    return [{"value": t.value, "label": f"{metrics[t.metric]} {t.op} {t.value:g}", "policy": t.policy,
             "clause": t.clause, "term": t.term} for t in thresholds if t.metric in metrics]


def _draw(title: str, points: list[dict[str, Any]], y_title: str, since: datetime, until: datetime,
          rules: list[dict[str, Any]], marks: list[dict[str, Any]], *, band: bool = False) -> None:
    st.subheader(title)
    chart = timeline(points, y_title=y_title, start=since, end=until, band=band, thresholds=rules, marks=marks,
                     threshold_tooltip=("policy:N", "clause:N", "term:N"), mark_tooltip=_MARK_TOOLTIP)
    st.vega_lite_chart(spec=chart, width="stretch")


# --------------------------------------------------------------------------- the charts


def _frame(points: list[SeriesPoint], name: Callable[[SeriesPoint], str]) -> list[dict[str, Any]]:
    return [{"time": p.time, "value": p.mean, "series": name(p)} for p in points]


def _panel(session: Session, model_id: int, panel: Panel, since: datetime, until: datetime,
           thresholds: list[Threshold], marks: list[dict[str, Any]], missing: list[str]) -> None:
    points = timeline_queries.downsampled(session, model_id, panel.metrics, since=since, until=until)
    if not points:
        missing.append(f"{panel.title.lower()} (written by {panel.writer})")
        return
    frame = _frame(points, lambda p: p.metric)
    _draw(panel.title, frame, panel.y_title, since, until,
          _rules(thresholds, {m: m for m in panel.metrics}), marks)


def _feature_drift(session: Session, model_id: int, since: datetime, until: datetime, marks: list[dict[str, Any]],
                   missing: list[str]) -> None:
    for metric, what in (("drift.feature.effect_size", "effect size"), ("drift.feature.statistic", "test statistic")):
        top = timeline_queries.top_labels(session, model_id, metric, "feature", since=since, until=until,
                                          n=TOP_FEATURES)
        if top:
            break
    else:
        missing.append("drift per feature (written by the drift sensor: drift.feature.*)")
        return
    points = timeline_queries.downsampled(session, model_id, [metric], since=since, until=until, by=["feature"],
                                          only=("feature", [name for name, _ in top]))
    _draw(f"Drift per feature: the {len(top)} with the largest {what}", _frame(points, lambda p: p.key[0]),
          what, since, until, _rules([], {}), marks)


def _fairness(session: Session, model_id: int, since: datetime, until: datetime, thresholds: list[Threshold],
              marks: list[dict[str, Any]], missing: list[str]) -> None:
    gap = st.selectbox("Fairness gap", GAPS, key="model_page_gap")
    base = f"fairness.gap.{gap}"
    points = timeline_queries.downsampled(session, model_id, [base, f"{base}.ci_low", f"{base}.ci_high"],
                                          since=since, until=until, by=["attribute"])
    if points:
        frame = pd.DataFrame([{"time": p.time, "series": p.key[0], "metric": p.metric, "mean": p.mean}
                              for p in points])
        wide = frame.pivot_table(index=["time", "series"], columns="metric", values="mean").reset_index()
        wide = wide.rename(columns={base: "value", f"{base}.ci_low": "low", f"{base}.ci_high": "high"})
        for column in ("value", "low", "high"):
            if column not in wide.columns:
                wide[column] = float("nan")
        wide = wide.dropna(subset=["value"]).to_dict("records")
        summary = {f"fairness.{gap}": gap, f"fairness.{gap}_upper": f"{gap} (upper end)",
                   f"fairness.{gap}_lower": f"{gap} (lower end)"}
        _draw(f"Fairness: {gap} by attribute, with confidence bands", wide, gap, since, until,
              _rules(thresholds, summary), marks, band=True)
    else:
        missing.append(f"fairness gaps ({gap}; written by the fairness sensor, for models with a fairness section)")
    rate = st.selectbox("Group rate", ("selection_rate", "true_positive_rate", "false_positive_rate", "accuracy"),
                        key="model_page_group_rate")
    groups = timeline_queries.downsampled(session, model_id, [f"fairness.group.{rate}"], since=since, until=until,
                                          by=["attribute", "group"])
    if not groups:
        missing.append(f"fairness per group ({rate})")
        return
    _draw(f"Fairness per group: {rate}", _frame(groups, lambda p: f"{p.key[0]}={p.key[1]}"), rate, since, until,
          _rules([], {}), marks)


# --------------------------------------------------------------------------- versions


def _gate(entry: VersionEntry) -> dict[str, Any]:
    """The champion/challenger numbers of the version's gate, flat (empty for a version no gate judged)."""
    numbers = entry.evaluation
    if not numbers:
        return {}
    metric = numbers.get("metric", "")
    candidate, champion = numbers.get("candidate") or {}, numbers.get("champion") or {}
    return {"gate": "passed" if numbers.get("passed") else "failed", "gate metric": metric,
            "challenger": candidate.get(metric), "champion": champion.get(metric),
            "champion version": numbers.get("champion_version"), "difference": numbers.get("difference"),
            "lower bound": numbers.get("lower_bound"), "margin": numbers.get("margin"),
            "rows": numbers.get("n"), "gate reason": numbers.get("reason")}


def _versions(session: Session, model_id: int) -> None:
    st.header("Versions")
    history = timeline_queries.version_history(session, model_id)
    if not history:
        st.info("No version is registered for this model yet: the bootstrap or a retrain registers one.")
        return
    rows = []
    for entry in history:
        made = (f"run {entry.action_run_id} ({entry.policy}, decision {entry.decision_id})"
                if entry.action_run_id is not None else "registered by hand or bootstrap")
        rows.append({"version": entry.version, "stage": entry.stage, "created": entry.created_at,
                     "promoted": entry.promoted_at, "retired": entry.retired_at,
                     "parent": entry.parent_version, "made by": made, **_gate(entry)})
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    st.subheader("Lineage")
    st.graphviz_chart(_lineage(history))


_STAGE_COLOURS = {"production": "#2ca02c", "canary": "#17becf", "candidate": "#1f77b4", "archived": "#c7c7c7",
                  "rejected": "#d62728"}


def _lineage(history: list[VersionEntry]) -> str:
    """A DOT graph: each version from its parent, coloured by stage, the edge labelled with what made it."""
    lines = ["digraph lineage {", "rankdir=LR;", 'node [shape=box, style="rounded,filled", fontname="sans-serif"];']
    known = {entry.version for entry in history}
    for entry in history:
        gate = _gate(entry)
        numbers = (f"\\n{gate['gate metric']} {gate['challenger']:.3f} vs {gate['champion']:.3f}"
                   if isinstance(gate.get("challenger"), float) and isinstance(gate.get("champion"), float) else "")
        lines.append(f'v{entry.version} [label="v{entry.version} ({entry.stage}){numbers}", '
                     f'fillcolor="{_STAGE_COLOURS.get(entry.stage, "#ffffff")}"];')
        if entry.parent_version is not None and entry.parent_version in known:
            label = f"{entry.policy}" if entry.policy else ""
            lines.append(f'v{entry.parent_version} -> v{entry.version} [label="{label}"];')
    lines.append("}")
    return "\n".join(lines)
