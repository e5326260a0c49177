"""The dashboard page renders the knowledge base: versions, decisions, and the audit chain's verdict."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from streamlit.testing.v1 import AppTest

from knowledge import registry
from knowledge.database import create_engine_for, session_scope
from knowledge.migrate import upgrade
from knowledge.tables import Decision

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


def _knowledge_base(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'mape.db'}"
    upgrade(url)
    engine = create_engine_for(url)
    with session_scope(engine) as session:
        model = registry.upsert_model(session, name="credit-risk", owner="risk@example.com")
        v1 = registry.register_version(session, model_id=model.id, artifact_uri="file:///v1",
                                       metrics={"accuracy": 0.9})
        registry.promote(session, v1, actor="test")
        session.add(Decision(model_id=model.id, policy_name="retrain-on-drift", action="retrain", status="proposed",
                             reason="drift and an accuracy drop", dedup_key="credit-risk/retrain-on-drift/t"))
    engine.dispose()
    return url


def _run(url: str, monkeypatch) -> AppTest:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MAPE_DB_URL", url)
    app = AppTest.from_file(str(APP), default_timeout=30)
    app.run()
    assert not app.exception, app.exception
    return app


def test_the_page_shows_models_versions_decisions_and_an_intact_audit_chain(tmp_path: Path, monkeypatch):
    app = _run(_knowledge_base(tmp_path), monkeypatch)
    assert [h.value for h in app.header] == ["credit-risk"]
    assert "audit trail intact" in app.success[0].value
    tables = [t.value for t in app.table]
    versions, decisions = tables[0], tables[2]
    assert list(versions["stage"]) == ["production"]
    assert list(decisions["policy"]) == ["retrain-on-drift"]


def test_an_altered_audit_row_is_flagged(tmp_path: Path, monkeypatch):
    url = _knowledge_base(tmp_path)
    engine = create_engine_for(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_event SET payload = '{}' WHERE id = 2"))
    engine.dispose()
    app = _run(url, monkeypatch)
    assert "audit trail altered at event 2" in app.error[0].value
