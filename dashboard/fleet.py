"""The fleet page (first cut): every model's versions, open symptoms and latest decisions, and the audit chain."""

from __future__ import annotations

import streamlit as st
from sqlmodel import Session

from dashboard.context import PageContext
from knowledge import audit, queries, registry
from mape.access import Identity


def render(session: Session, identity: Identity, context: PageContext) -> None:
    st.title("Fleet")
    verdict = audit.verify_chain(session)
    if verdict.ok:
        st.success(f"audit trail intact ({verdict.events} events)")
    else:
        st.error(f"audit trail altered at event {verdict.first_bad_id}: {verdict.reason}")
    models = queries.models_by_name(session)
    for name, model in sorted(models.items()):
        st.header(name)
        st.write(f"owner: {model.owner or '-'} · labels: {model.labels}")
        st.subheader("versions")
        st.table([{"version": v.version, "stage": v.stage, "accuracy": v.metrics.get("accuracy"),
                   "promoted": v.promoted_at, "artifact": v.artifact_uri}
                  for v in registry.versions(session, model.id)])
        st.subheader("open symptoms")
        st.table([{"kind": s.kind, "severity": s.severity, "since": s.opened_at}
                  for s in queries.open_symptoms(session, model.id)])
        st.subheader("decisions (latest 50)")
        rows = queries.decisions(session, model_id=model.id, limit=50, newest_first=True)
        st.table([{"id": d.id, "time": d.created_at, "policy": d.policy_name, "action": d.action,
                   "status": d.status, "reason": d.reason} for d in rows])
