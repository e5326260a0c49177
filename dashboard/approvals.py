"""The Approvals page: decisions awaiting a person, their evidence and what would happen, approve or reject.

An approved decision is dispatched by the controller's next tick; a rejected
one is closed. The buttons are drawn for approvers and admins only, and the
act checks the role again (:func:`mape.access.approve`), records the person,
time and comment, and appends an audit event. A decision someone else
answered first, or one past its deadline, is refused with who and when.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import streamlit as st
from sqlmodel import Session

from dashboard.context import PageContext
from knowledge import queries
from knowledge.database import session_scope
from knowledge.tables import DecisionStatus
from mape.access import Identity, Role, approve, reject
from mape.errors import MapeError


_FLASH = "mape_approval_flash"


def render(session: Session, identity: Identity, context: PageContext) -> None:
    st.title("Approvals")
    flash = st.session_state.pop(_FLASH, None)
    if flash is not None:
        (st.success if flash[0] == "ok" else st.error)(flash[1])
    waiting = queries.decisions(session, status=DecisionStatus.awaiting_approval.value, limit=200)
    if not waiting:
        st.info("No decision awaits approval.")
        return
    names = {m.id: m.name for m in queries.models_by_id(session, {d.model_id for d in waiting}).values()}
    may_answer = identity.role.allows(Role.approver)
    if not may_answer:
        st.warning(f"You are signed in as a {identity.role.value}: you can see these decisions, an approver "
                   "answers them.")
    for decision in waiting:
        model = names.get(decision.model_id, str(decision.model_id))
        with st.container(border=True):
            st.subheader(f"Decision {decision.id}: {decision.action} on {model}")
            deadline = f"; expires {decision.expires_at:%Y-%m-%d %H:%M} UTC" if decision.expires_at else ""
            st.write(f"Policy **{decision.policy_name}**, made {decision.created_at:%Y-%m-%d %H:%M} UTC{deadline}.")
            st.write(f"Why: {decision.reason or '-'}")
            st.write(f"What would happen: the next tick runs **{decision.action}** on **{model}**"
                     + (f" with {json.dumps(decision.params)}" if decision.params else "") + ".")
            with st.expander("Evidence"):
                st.json(decision.evidence)
            if not may_answer:
                continue
            st.text_input("Comment", key=f"comment-{decision.id}", placeholder="Why (required to reject)")
            left, right = st.columns(2)
            left.button("Approve", key=f"approve-{decision.id}", type="primary", on_click=_answer,
                        args=(context, "approve", decision.id))
            right.button("Reject", key=f"reject-{decision.id}", on_click=_answer, args=(context, "reject", decision.id))


def _answer(context: PageContext, verb: str, decision_id: int) -> None:
    """The button's callback: it runs before the page is drawn again, so a decision answered elsewhere meanwhile
    (whose buttons the next drawing leaves out) still gets a reply saying who answered it."""
    comment = st.session_state.get(f"comment-{decision_id}", "")
    act = approve if verb == "approve" else reject
    try:
        identity = context.identity()
        with session_scope(context.engine) as session:
            decision = act(session, decision_id, identity, at=datetime.now(timezone.utc), comment=comment)
            text = str(decision)
    except MapeError as exc:
        st.session_state[_FLASH] = ("error", str(exc))
        return
    then = "the next tick dispatches it" if verb == "approve" else "it is closed"
    st.session_state[_FLASH] = ("ok", f"{text}: {verb.rstrip('e')}ed by {identity.name}; {then}.")
