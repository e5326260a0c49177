"""The audit trail section of the Decisions page: the hash chain's verdict and the recent events, by kind and actor.

Who calls it: :mod:`dashboard.decisions`, in its "Audit trail" tab. The
chain is verified by one :class:`knowledge.audit.ChainWatch` per knowledge
base for the whole dashboard process, a bounded number of events per page
view (the first pass over 100,000 events takes four views), against the
hashes it remembers in memory; the verdict says how much is verified and
since when. The events are listed a page at a time, newest first.
"""

from __future__ import annotations

import json
import math

import streamlit as st
from sqlmodel import Session

from dashboard.context import PageContext
from knowledge import audit, decision_log


@st.cache_resource(show_spinner=False)
def _watch(database: str) -> audit.ChainWatch:
    """The process's watch of one knowledge base's chain (``database``: its URL, password hidden)."""
    return audit.ChainWatch()


def watch_of(context: PageContext) -> audit.ChainWatch:
    """The watch of the page's knowledge base."""
    return _watch(context.engine.url.render_as_string(hide_password=True))


def render(session: Session, context: PageContext) -> None:
    watch = watch_of(context)
    verdict = watch.check(session)
    _verdict(verdict, watch.budget)
    st.button("Verify the whole chain again", key="audit-reverify", on_click=watch.restart,
              help="Starts a new pass from the first event; it goes on over the next page views.")
    kinds, actors = decision_log.audit_filter_options(session)
    if not kinds:
        return
    left, right = st.columns(2)
    flt = decision_log.AuditFilter(kinds=left.multiselect("Kind", kinds, key="audit-kinds"),
                                   actors=right.multiselect("Actor", actors, key="audit-actors"))
    total = decision_log.count_audit_events(session, flt)
    pages = max(1, math.ceil(total / decision_log.PAGE_SIZE))
    page = st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, key="audit-page")
    events = decision_log.audit_page(session, flt, offset=(int(page) - 1) * decision_log.PAGE_SIZE)
    st.caption(f"{total:,} events match; newest first, {decision_log.PAGE_SIZE} a page.")
    st.dataframe([{"id": e.id, "time (UTC)": e.time, "actor": e.actor, "kind": e.kind, "subject": e.subject,
                   "payload": json.dumps(e.payload, sort_keys=True, default=str)} for e in events],
                 hide_index=True, width="stretch")


def _verdict(verdict: audit.WatchVerdict, budget: int) -> None:
    if not verdict.ok:
        st.error(f"The audit trail was altered at event {verdict.first_bad_id}: {verdict.reason}. Events before "
                 "it may be trusted only as far as they were verified; find out who changed the knowledge base.")
        return
    if verdict.total == 0:
        st.info("The audit trail is empty: nothing has been recorded yet.")
        return
    if verdict.full_at is None:
        st.warning(f"Audit trail: {verdict.verified:,} of {verdict.total:,} events verified so far, none altered. "
                   f"Each view of this page verifies {budget:,} more; the rest is not verified yet.")
        return
    if verdict.verified < verdict.total:
        st.warning(f"Audit trail: {verdict.verified:,} of {verdict.total:,} events verified, none altered; the "
                   f"{verdict.total - verdict.verified:,} newest are verified over the next views "
                   f"({budget:,} a view).")
        return
    again = (f" A new pass has re-verified {verdict.repass:,} events so far." if verdict.repass is not None else "")
    st.success(f"Audit trail intact: all {verdict.total:,} events verified. The whole chain was verified from its "
               f"first event by {verdict.full_at:%Y-%m-%d %H:%M:%S} UTC, and every newer event since, against the "
               f"hashes this dashboard remembers.{again}")
