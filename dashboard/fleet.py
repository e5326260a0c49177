"""The Fleet page: every managed model at a glance, filterable, each linked to its Model page; admins pause models.

One row per model (:func:`knowledge.fleet_overview.fleet_overview`, seven
fleet-wide statements, 6 ms on a SQLite knowledge base of 50 models, 1 million
observations and 10,000 decisions; the whole page runs in 0.03-0.14 s on
SQLite and PostgreSQL): production version, health (open
symptoms by severity), last action and its verdict, decisions awaiting
approval, signal freshness and pause. The table sorts by any column (click
its header; the health column sorts critical, warning, info, healthy);
filters narrow it by name, owner and label.

Freshness follows the Analyze stage's staleness rule (the watched sensors and
``stale_after`` of the configuration, as the controller builds its
:class:`~mape.analyze.stage.Analyzer`): a sensor whose newest report is older
than ``stale_after`` is stale; one that never reported for the model is not.

Admins get a pause and resume form; the act checks the role again
(:mod:`mape.access.pausing`) and appends ``model.paused`` or
``model.resumed`` to the audit trail, like ``mape pause --model``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import pandas as pd
import streamlit as st
from sqlmodel import Session

from dashboard.context import PageContext
from dashboard.navigation import MODEL_KEY, open_page
from knowledge.database import session_scope
from knowledge.fleet_overview import FleetRow, fleet_overview
from mape._util.timeutil import utcnow
from mape.access import Identity, Role
from mape.access.pausing import pause_model, resume_model
from mape.analyze.stage import FRESHNESS_METRICS, Analyzer
from mape.errors import MapeError

_FLASH = "mape_fleet_flash"
#: Severities in the order they are shown and sorted (the markers' code points sort the same way).
SEVERITY_MARKS = {"critical": "🔴", "warning": "🟠", "info": "🟡"}
HEALTHY = "🟢 healthy"
VERDICT_MARKS = {"pass": "✅ pass", "fail": "❌ fail", "inconclusive": "❔ inconclusive", "pending": "⏳ pending"}


def render(session: Session, identity: Identity, context: PageContext) -> None:
    st.title("Fleet")
    flash = st.session_state.pop(_FLASH, None)
    if flash is not None:
        (st.success if flash[0] == "ok" else st.error)(flash[1])
    stale_after = context.settings.stale_after
    # the sensors the controller's Analyzer watches (built as the controller builds it, with the default sensors)
    sensors = {s: FRESHNESS_METRICS[s] for s in Analyzer([], stale_after=stale_after).stale_sensors}
    rows = fleet_overview(session, freshness_metrics=list(sensors.values()))
    if not rows:
        st.info("No managed model is in the knowledge base yet: the controller registers the models named in the "
                "configuration (`models:` in mape.yaml) when it starts (`mape run`).")
        return
    now = utcnow()
    search, owners, labels = _filters(rows)
    shown = select_rows(rows, search=search, owners=owners, labels=labels)
    _summary(shown, sensors, now, stale_after)
    if not shown:
        st.warning("No model matches these filters.")
    else:
        table = st.dataframe(fleet_frame(shown, sensors, now=now, stale_after=stale_after), hide_index=True,
                             column_config=_COLUMNS, on_select="rerun", selection_mode="single-row",
                             key="fleet-table")
        st.caption(f"A signal is stale when its sensor has not reported for {_duration(stale_after)} "
                   "(`stale_after`); click a column's header to sort; pick a row to open its model here, or "
                   "follow a model's link to open it in a new tab (which asks you to sign in there).")
        picked = [shown[i].name for i in table.selection.rows if i < len(shown)]
        opened = picked[0] if picked else shown[0].name
        st.button(f"Open {opened}", key="open-model", type="primary", on_click=open_page, args=("Model",),
                  kwargs={MODEL_KEY: opened})
    if identity.role.allows(Role.admin):
        _pause_form(rows, context)


def select_rows(rows: Sequence[FleetRow], *, search: str = "", owners: Iterable[str] = (),
                labels: Iterable[str] = ()) -> list[FleetRow]:
    """The rows whose name contains ``search`` (any case), whose owner is one of ``owners``, and that carry the
    ``labels`` (``key=value``: any of the values chosen for a key, every key chosen); empty filters keep all."""
    wanted: dict[str, set[str]] = {}
    for label in labels:
        key, sep, value = label.partition("=")
        if not sep:
            raise ValueError(f"The 'labels' filter of the Fleet page must hold key=value pairs. Got {label!r} instead.")
        wanted.setdefault(key, set()).add(value)
    needle, owner_set = search.strip().lower(), set(owners)
    return [row for row in rows
            if needle in row.name.lower()
            and (not owner_set or row.owner in owner_set)
            and all(row.labels.get(key) in values for key, values in wanted.items())]


def fleet_frame(rows: Sequence[FleetRow], sensors: Mapping[str, str], *, now: datetime,
                stale_after: timedelta) -> pd.DataFrame:
    """The table the page shows: one row per model, the columns of :data:`_COLUMNS`."""
    records = []
    for row in rows:
        action = row.last_action
        records.append({
            "model": f"./?page=Model&model={quote(row.name, safe='')}",
            "health": health(row.symptoms),
            "production": row.production_version,
            "promoted": row.promoted_at,
            "last action": None if action is None else f"{action.action} ({action.policy})",
            "state": None if action is None else action.state,
            "verdict": None if action is None or action.verdict is None else VERDICT_MARKS.get(action.verdict,
                                                                                              action.verdict),
            "finished": None if action is None else action.finished_at,
            "awaiting approval": row.pending_approvals,
            "signals": freshness(row.signals, sensors, now=now, stale_after=stale_after),
            "newest signal": row.newest_signal,
            "paused": "" if row.pause is None else f"⏸ {row.pause.paused_by}: {row.pause.reason}",
            "owner": row.owner,
            "labels": [f"{k}={v}" for k, v in sorted(row.labels.items())],
        })
    frame = pd.DataFrame.from_records(records)
    for column in ("promoted", "finished", "newest signal"):  # all-empty columns stay datetimes for their format
        frame[column] = pd.to_datetime(frame[column], utc=True)
    frame["production"] = frame["production"].astype("Int64")
    return frame


def health(symptoms: Mapping[str, int]) -> str:
    """Open symptoms by severity, worst first: ``🔴 critical 1 · 🟠 warning 2``; none: ``🟢 healthy``."""
    ordered = [*SEVERITY_MARKS, *sorted(set(symptoms) - set(SEVERITY_MARKS))]
    parts = [f"{SEVERITY_MARKS.get(s, '⚪')} {s} {symptoms[s]}" for s in ordered if symptoms.get(s)]
    return " · ".join(parts) or HEALTHY


def freshness(signals: Mapping[str, datetime], sensors: Mapping[str, str], *, now: datetime,
              stale_after: timedelta) -> str:
    """Whether each watched sensor reported within ``stale_after`` (the Analyze stage's rule) as one cell."""
    newest = {sensor: signals[metric] for sensor, metric in sensors.items() if metric in signals}
    if not newest:
        return "⚪ no signal yet"
    stale = sorted(s for s, t in newest.items() if t < now - stale_after)
    if stale:
        return f"🟠 stale: {', '.join(stale)} ({_duration(now - min(newest[s] for s in stale))} ago)"
    return "🟢 fresh"


_COLUMNS = {
    "model": st.column_config.LinkColumn("Model", display_text=r"model=(.*)$", pinned=True,
                                         help="Opens the model's page"),
    "health": st.column_config.TextColumn("Health", help="Open symptoms by severity"),
    "production": st.column_config.NumberColumn("Production", format="v%d", help="The version in production"),
    "promoted": st.column_config.DatetimeColumn("Promoted", format="distance"),
    "last action": st.column_config.TextColumn("Last action", help="The newest action run, and its policy"),
    "state": st.column_config.TextColumn("State"),
    "verdict": st.column_config.TextColumn("Verdict", help="Verification against the policy's verify"),
    "finished": st.column_config.DatetimeColumn("Finished", format="distance"),
    "awaiting approval": st.column_config.NumberColumn("Awaiting approval", help="Decisions waiting for a person"),
    "signals": st.column_config.TextColumn("Signals", help="Whether the watched sensors report (stale_after)"),
    "newest signal": st.column_config.DatetimeColumn("Newest signal", format="distance"),
    "paused": st.column_config.TextColumn("Paused", help="Paused by whom, and why"),
    "owner": st.column_config.TextColumn("Owner"),
    "labels": st.column_config.ListColumn("Labels"),
}


def _filters(rows: Sequence[FleetRow]) -> tuple[str, list[str], list[str]]:
    search_col, owner_col, label_col = st.columns([2, 3, 3])
    search = search_col.text_input("Model name contains", key="fleet-search")
    owners = owner_col.multiselect("Owner", sorted({r.owner for r in rows}), key="fleet-owners",
                                   format_func=lambda o: o or "(no owner)")
    labels = label_col.multiselect("Labels", sorted({f"{k}={v}" for r in rows for k, v in r.labels.items()}),
                                   key="fleet-labels", help="Any value chosen for a key, every key chosen")
    return search, owners, labels


def _summary(rows: Sequence[FleetRow], sensors: Mapping[str, str], now: datetime, stale_after: timedelta) -> None:
    tiles = st.columns(5)
    tiles[0].metric("Models", len(rows))
    tiles[1].metric("With critical symptoms", sum(1 for r in rows if r.symptoms.get("critical")))
    tiles[2].metric("Stale signals", sum(1 for r in rows
                                         if freshness(r.signals, sensors, now=now, stale_after=stale_after)
                                         .startswith("🟠")))
    tiles[3].metric("Awaiting approval", sum(r.pending_approvals for r in rows))
    tiles[4].metric("Paused", sum(1 for r in rows if r.pause is not None))


def _pause_form(rows: Sequence[FleetRow], context: PageContext) -> None:
    st.subheader("Pause or resume a model")
    st.caption("A paused model's decisions are recorded as suppressed from the next tick on, never acted on.")
    paused = {r.name: r.pause for r in rows if r.pause is not None}
    name = st.selectbox("Model", [r.name for r in rows], key="fleet-pause-model",
                        format_func=lambda n: f"{n} (paused)" if n in paused else n)
    pause = paused.get(name)
    if pause is not None:
        st.write(f"Paused by **{pause.paused_by}** {pause.paused_at:%Y-%m-%d %H:%M} UTC: {pause.reason}")
        st.button("Resume", key="fleet-resume", on_click=_act, args=(context, "resume", name))
        return
    st.text_input("Reason", key="fleet-pause-reason", placeholder="Why (shown in every decision it suppresses)")
    st.button("Pause", key="fleet-pause", type="primary", on_click=_act, args=(context, "pause", name))


def _act(context: PageContext, verb: str, name: str) -> None:
    """The button's callback (runs before the page is drawn again): pause or resume, the reply flashed."""
    at = datetime.now(timezone.utc)
    try:
        identity = context.identity()
        with session_scope(context.engine) as session:
            if verb == "pause":
                row, created = pause_model(session, name, identity, at=at,
                                           reason=st.session_state.get("fleet-pause-reason", ""))
                reply = (f"model {name} paused by {identity.name}: its decisions are suppressed from the next tick."
                         if created else f"model {name} was already paused: {row}")
            else:
                lifted = resume_model(session, name, identity, at=at)
                reply = (f"model {name} resumed by {identity.name} (it was {lifted})." if lifted is not None
                         else f"model {name} is not paused (someone resumed it meanwhile).")
    except MapeError as exc:
        st.session_state[_FLASH] = ("error", str(exc))
        return
    st.session_state.pop("fleet-pause-reason", None)
    st.session_state[_FLASH] = ("ok", reply)


def _duration(delta: timedelta) -> str:
    """``45 s``, ``12 min``, ``3 h``, ``2 d``: the largest whole unit."""
    seconds = max(int(delta.total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
