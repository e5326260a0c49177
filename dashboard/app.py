"""The governance dashboard's first page: what the engine knows and what it did, read-only.

Reads the knowledge base at ``$MAPE_DB_URL`` through :mod:`knowledge` queries.
Sign-in, approvals and the per-model pages come with the dashboard's own
issue; this page already answers "which version serves, what did the engine
decide, and why".
"""

from __future__ import annotations

import os

import streamlit as st

from knowledge import audit, queries, registry
from knowledge.database import create_engine_for, session_scope


@st.cache_resource
def _engine(url: str):  # type: ignore[no-untyped-def]
    return create_engine_for(url)


def main() -> None:
    st.set_page_config(page_title="mape", layout="wide")
    st.title("mape: the control loop's knowledge")
    url = os.environ.get("MAPE_DB_URL", "sqlite:///mape.db")
    engine = _engine(url)
    with session_scope(engine) as session:
        models = queries.models_by_name(session)
        st.caption(f"knowledge base: {url}")
        verdict = audit.verify_chain(session)
        if verdict.ok:
            st.success(f"audit trail intact ({verdict.events} events)")
        else:
            st.error(f"audit trail altered at event {verdict.first_bad_id}: {verdict.reason}")
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


main()
