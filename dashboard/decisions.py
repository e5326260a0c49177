"""The Decisions page: every decision with its evidence, policy version, status and action run; and the audit trail.

Who calls it: :mod:`dashboard.app`, as the page "Decisions". The filters
(model, policy, action, status: the values the decisions hold; the days
they were made) are kept in the address
(``?page=Decisions&decisions_model=credit-risk``), so a link from another
page opens the decisions of one model. The parameters are named for this
page: a parameter bound to a widget cannot be set by another page, and the
Model and Policies pages keep their own ``model`` and ``policy`` there. The listing
is one query per page of 50, newest first, with a count and a chart of the
decisions per day by status (:mod:`knowledge.decision_log`); the detail of
the decision picked (or named by ``?decision=ID``) shows its evidence, the
text of the policy version that made it, and its action run with the
Prefect flow run's link. The export writes every row of the filter (up to
:data:`knowledge.decision_log.CSV_CAP`) when the button is clicked, not
when the page is drawn. The "Audit trail" tab is :mod:`dashboard.audit_trail`.
Nothing here changes state, so no role is needed beyond signing in.
"""

from __future__ import annotations

import io
import math
from datetime import date, datetime, time, timedelta, timezone

import altair as alt
import pandas as pd
import streamlit as st
from sqlalchemy.engine import Engine
from sqlmodel import Session

from dashboard import audit_trail
from dashboard.charts import OUTCOME_COLOURS
from dashboard.context import PageContext
from dashboard.flow_runs import prefect_ui_url
from knowledge import decision_log
from knowledge.database import session_scope
from knowledge.decision_log import DecisionFilter
from mape.access import Identity


def render(session: Session, identity: Identity, context: PageContext) -> None:
    st.title("Decisions")
    log, trail = st.tabs(["Decisions", "Audit trail"])
    with log:
        _log(session, context)
    with trail:
        audit_trail.render(session, context)


def _log(session: Session, context: PageContext) -> None:
    options = decision_log.filter_options(session)
    if options.first is None or options.last is None:
        st.info("No decision has been made yet: the planner writes one each time a policy fires for a model.")
        return
    flt = _filters(options)
    if flt is None:
        return
    total = decision_log.count_decisions(session, flt)
    _chart(decision_log.decisions_per_day(session, flt))
    pages = max(1, math.ceil(total / decision_log.PAGE_SIZE))
    top, export = st.columns([3, 1])
    page = top.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, key="decisions-page")
    rows = decision_log.decision_page(session, flt, offset=(int(page) - 1) * decision_log.PAGE_SIZE)
    ui = prefect_ui_url(context.settings)
    shown = min(total, decision_log.CSV_CAP)
    export.download_button(f"Download CSV ({shown:,} rows)", data=lambda: _csv(context.engine, flt),
                           file_name="decisions.csv", mime="text/csv", on_click="ignore", key="decisions-csv",
                           help=f"Every decision the filters select, newest first, at most "
                                f"{decision_log.CSV_CAP:,} rows; the evidence is left out (see a decision's detail).")
    st.caption(f"{total:,} decisions match; newest first, {decision_log.PAGE_SIZE} a page.")
    if not rows:
        st.info("No decision matches these filters.")
    else:
        st.dataframe(pd.DataFrame([_line(r, ui) for r in rows]), hide_index=True, width="stretch",
                     column_config={"flow run": st.column_config.LinkColumn("flow run", display_text=r"flow-run/(.*)")})
    _detail_picker(session, rows, ui)


def _filters(options: decision_log.FilterOptions) -> DecisionFilter | None:
    """The filter widgets (bound to the address), and the filter they make; None (with a message) when unusable."""
    first, last = options.first.date(), options.last.date()  # type: ignore[union-attr]
    cols = st.columns(5)
    models = cols[0].multiselect("Model", options.models, key="decisions_model", bind="query-params")
    policies = cols[1].multiselect("Policy", options.policies, key="decisions_policy", bind="query-params")
    actions = cols[2].multiselect("Action", options.actions, key="decisions_action", bind="query-params")
    statuses = cols[3].multiselect("Status", options.statuses, key="decisions_status", bind="query-params")
    days = cols[4].date_input("Made on (UTC days)", value=(first, last), key="decisions-days")
    since, until = _day_range(days)
    try:
        return DecisionFilter(models=models, policies=policies, actions=actions, statuses=statuses,
                              since=since, until=until)
    except ValueError as exc:
        st.error(f"These filters cannot be used: {exc}")
        return None


def _day_range(days: object) -> tuple[datetime | None, datetime | None]:
    """``[first day 00:00, day after the last 00:00)`` in UTC of the date input's value (one day while picking)."""
    picked = [d for d in (days if isinstance(days, (tuple, list)) else (days,)) if isinstance(d, date)]
    if not picked:
        return None, None
    start = datetime.combine(picked[0], time(), tzinfo=timezone.utc)
    end = datetime.combine(picked[-1], time(), tzinfo=timezone.utc) + timedelta(days=1)
    return start, end


def _chart(per_day: list[tuple[date, str, int]]) -> None:
    if not per_day:
        return
    frame = pd.DataFrame(per_day, columns=["day", "status", "decisions"])
    statuses = sorted(frame["status"].unique())
    colours = alt.Scale(domain=statuses, range=[OUTCOME_COLOURS.get(s, "#8c564b") for s in statuses])
    chart = (alt.Chart(frame, title="Decisions per day (UTC), by status")
             .mark_bar()
             .encode(x=alt.X("day:T", title=None), y=alt.Y("decisions:Q", title="decisions"),
                     color=alt.Color("status:N", scale=colours), tooltip=["day:T", "status:N", "decisions:Q"])
             .properties(height=180))
    st.altair_chart(chart, width="stretch")


def _flow_run_link(ui: str | None, flow_run_id: str) -> str | None:
    """The Prefect UI page of a flow run (:mod:`dashboard.flow_runs`), or None without a known UI."""
    return f"{ui}/runs/flow-run/{flow_run_id}" if ui else None


def _line(row: decision_log.DecisionRow, ui: str | None) -> dict[str, object]:
    version = f"v{row.policy_version}" if row.policy_version else (row.policy_sha256 or "")[:8]
    link = _flow_run_link(ui, row.flow_run_id) if row.flow_run_id else None
    return {"id": row.id, "made (UTC)": row.created_at, "model": row.model, "policy": row.policy,
            "version": version, "action": row.action, "status": row.status, "run": row.run_state or "",
            "verdict": row.verdict or "", "flow run": link or row.flow_run_id or "", "reason": row.reason}


def _detail_picker(session: Session, rows: list[decision_log.DecisionRow], ui: str | None) -> None:
    ids = [r.id for r in rows]
    asked = st.query_params.get("decision")
    if asked is not None and asked.isdigit() and int(asked) not in ids:
        ids.insert(0, int(asked))
    if not ids:
        return
    labels = {r.id: f"{r.id}: {r.policy} -> {r.action} on {r.model} ({r.status})" for r in rows}
    default = ids.index(int(asked)) if asked is not None and asked.isdigit() else 0
    picked = st.selectbox("Decision to show", ids, index=default, format_func=lambda i: labels.get(i, str(i)),
                          key="decisions-picked")
    _detail(session, int(picked), ui)


def _detail(session: Session, decision_id: int, ui: str | None) -> None:
    detail = decision_log.decision_detail(session, decision_id)
    if detail is None:
        st.warning(f"There is no decision {decision_id} in this knowledge base.")
        return
    d = detail.decision
    with st.container(border=True):
        st.subheader(f"Decision {d.id}: {d.action} on {detail.model}")
        version = f" version {detail.policy_version_number}" if detail.policy_version_number else ""
        answered = f"; {d.status} by {d.decided_by} at {d.decided_at:%Y-%m-%d %H:%M} UTC" if d.decided_by and \
            d.decided_at else ""
        st.markdown(f"Policy **{d.policy_name}**{version}, status **{d.status}**, made "
                    f"{d.created_at:%Y-%m-%d %H:%M:%S} UTC{answered}.")
        st.markdown(f"Why: {d.reason or '-'}")
        if d.comment:
            st.markdown(f"Comment: {d.comment}")
        if d.params:
            st.markdown("Parameters:")
            st.json(d.params)
        st.markdown("**Evidence**")
        if d.evidence:
            st.json(d.evidence)
        else:
            st.caption("No evidence was recorded with this decision.")
        _policy_version(detail)
        _run(detail, ui)


def _policy_version(detail: decision_log.DecisionDetail) -> None:
    d, version = detail.decision, detail.policy_version
    if version is None:
        st.warning(f"The policy version that made this decision is not in the knowledge base "
                   f"(sha256 {d.policy_sha256 or 'not recorded'}).")
        return
    with st.expander(f"Policy version {detail.policy_version_number}: sha256 {version.sha256[:12]}, "
                     f"loaded {version.loaded_at:%Y-%m-%d %H:%M} UTC"):
        st.markdown(f"Source: `{version.source or '-'}` · author: {version.author or '-'} · "
                    f"sha256 of the text: `{version.sha256}`")
        st.code(version.text, language="yaml")


def _run(detail: decision_log.DecisionDetail, ui: str | None) -> None:
    run = detail.run
    if run is None:
        st.info(f"No action run: the decision is {detail.decision.status}"
                + (", and the executor has not picked it up yet." if detail.decision.status in
                   ("proposed", "approved") else ", so nothing runs."))
        return
    st.markdown(f"**Action run {run.id}**: {run.action}, state **{run.state}**, {run.attempts} attempt(s)"
                + (f", verdict **{run.verdict}**" if run.verdict else ""))
    times = [(label, value) for label, value in (("scheduled for", run.scheduled_for), ("started", run.started_at),
                                                 ("finished", run.finished_at), ("verdict at", run.verdict_at))
             if value is not None]
    if times:
        st.markdown(" · ".join(f"{label} {value:%Y-%m-%d %H:%M:%S} UTC" for label, value in times))
    if run.message:
        st.markdown(f"Message: {run.message}")
    if run.flow_run_id is None:
        st.caption("No Prefect flow run is recorded for this run.")
        return
    url = _flow_run_link(ui, run.flow_run_id)
    if url is None:
        st.markdown(f"Prefect flow run `{run.flow_run_id}` (no Prefect UI is configured: set `PREFECT_UI_URL`, "
                    "`PREFECT_API_URL` or `prefect.api_url` for a link).")
    else:
        st.markdown(f"Prefect flow run: [{run.flow_run_id}]({url})")


def _csv(engine: Engine, flt: DecisionFilter) -> bytes:
    """The export, built when the button is clicked (on Streamlit's thread for it, so with its own session)."""
    out = io.StringIO()
    with session_scope(engine) as session:
        decision_log.write_csv(session, flt, out)
    return out.getvalue().encode()
