"""The Fleet page: one row per model with health, freshness and links; filters narrow it; admins pause and resume."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from sqlmodel import select

from dashboard.fleet import freshness, health, select_rows
from knowledge import queries, registry
from knowledge.database import create_engine_for, session_scope
from knowledge.fleet_overview import FleetRow
from knowledge.migrate import upgrade
from knowledge.tables import AuditEvent, Symptom, observation_row
from mape._util.timeutil import utcnow
from mape.access import Role, UsersFile
from tests.dashboard.app_harness import PASSWORD, knowledge_base, open_app, sign_in


def _fleet(tmp_path: Path) -> Path:
    """The harness's credit-risk (production v1) and two more models, with symptoms and signals of now."""
    config = knowledge_base(tmp_path)
    now = utcnow()
    engine = create_engine_for(f"sqlite:///{tmp_path / 'mape.db'}")
    with session_scope(engine) as session:
        risk = queries.models_by_name(session)["credit-risk"]
        risk.labels = {"team": "risk"}
        session.add(risk)
        fraud = registry.upsert_model(session, name="fraud", owner="fraud@example.com",
                                      labels={"team": "fraud", "tier": "gold"})
        registry.upsert_model(session, name="churn", owner="risk@example.com", labels={"tier": "gold"})
        session.add(Symptom(model_id=risk.id, kind="accuracy_drop", severity="critical", opened_at=now,
                            last_seen_at=now))
        session.add(Symptom(model_id=risk.id, kind="data_drift", severity="warning", opened_at=now, last_seen_at=now))
        queries.add_observations(session, [
            observation_row(time=now - timedelta(minutes=1), model_id=risk.id, sensor="drift",
                            metric="drift.n_current", value=100.0),
            observation_row(time=now - timedelta(hours=2, minutes=5), model_id=fraud.id, sensor="drift",
                            metric="drift.n_current", value=100.0),
        ])
    engine.dispose()
    return config


def _table(app):  # type: ignore[no-untyped-def]
    (frame,) = [d.value for d in app.dataframe]
    return frame


def _names(app) -> list[str]:  # type: ignore[no-untyped-def]
    return [link.rsplit("model=", 1)[1] for link in _table(app)["model"]]


def _controls(app) -> list[str]:  # type: ignore[no-untyped-def]
    return [b.label for b in app.button if (b.key or "").startswith("fleet-")]


def _rerun(app):  # type: ignore[no-untyped-def]
    app.run()
    assert not app.exception, app.exception
    return app


def _stored(tmp_path: Path) -> tuple[list[str], list[tuple[str, str, str]]]:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'mape.db'}")
    try:
        with session_scope(engine) as session:
            paused = [p.name for p in queries.pauses(session)]
            events = [(e.kind, e.actor, e.subject) for e in session.exec(select(AuditEvent).order_by(AuditEvent.id))
                      if e.kind.startswith("model.paused") or e.kind.startswith("model.resumed")]
            return paused, events
    finally:
        engine.dispose()


def test_every_model_has_a_row_with_its_health_freshness_version_and_a_link_to_its_page(tmp_path, monkeypatch):
    app = sign_in(open_app(_fleet(tmp_path), monkeypatch), "vic")
    frame = _table(app).set_index("model")
    assert list(frame.index) == ["./?page=Model&model=churn", "./?page=Model&model=credit-risk",
                                 "./?page=Model&model=fraud"]
    risk, fraud, churn = (frame.loc[f"./?page=Model&model={n}"] for n in ("credit-risk", "fraud", "churn"))
    assert (risk["health"], fraud["health"], churn["health"]) == ("🔴 critical 1 · 🟠 warning 1", "🟢 healthy",
                                                                  "🟢 healthy")
    assert (risk["signals"], fraud["signals"], churn["signals"]) == ("🟢 fresh", "🟠 stale: drift (2 h ago)",
                                                                     "⚪ no signal yet")
    assert risk["production"] == 1 and str(fraud["production"]) == "<NA>"
    assert risk["owner"] == "risk@example.com" and list(fraud["labels"]) == ["team=fraud", "tier=gold"]
    assert risk["awaiting approval"] == 0 and risk["last action"] is None
    metrics = {m.label: m.value for m in app.metric}
    assert metrics == {"Models": "3", "With critical symptoms": "1", "Stale signals": "1", "Awaiting approval": "0",
                       "Paused": "0"}


def test_a_model_opens_on_the_model_page_in_the_same_session_without_signing_in_again(tmp_path, monkeypatch):
    app = sign_in(open_app(_fleet(tmp_path), monkeypatch), "vic")
    app.text_input(key="fleet-search").input("fraud")
    _rerun(app)
    opener = app.button(key="open-model")
    assert opener.label == "Open fraud"
    opener.click()
    _rerun(app)
    assert app.sidebar.radio(key="page").value == "Model"
    assert app.selectbox(key="model_page_model").value == "fraud"
    assert not [t for t in app.text_input if t.label == "Password"]


def test_filters_by_owner_label_and_name_narrow_the_rows(tmp_path, monkeypatch):
    app = sign_in(open_app(_fleet(tmp_path), monkeypatch), "vic")
    app.multiselect(key="fleet-owners").set_value(["risk@example.com"])
    assert _names(_rerun(app)) == ["churn", "credit-risk"]
    app.multiselect(key="fleet-labels").set_value(["tier=gold"])
    assert _names(_rerun(app)) == ["churn"]
    app.multiselect(key="fleet-owners").set_value([])
    assert _names(_rerun(app)) == ["churn", "fraud"]
    app.text_input(key="fleet-search").input("FRA")
    assert _names(_rerun(app)) == ["fraud"]
    app.text_input(key="fleet-search").input("nothing like it")
    _rerun(app)
    assert not app.dataframe and app.warning[0].value == "No model matches these filters."


def test_an_admin_pauses_a_model_with_a_reason_and_resumes_it_both_audited(tmp_path, monkeypatch):
    app = sign_in(open_app(_fleet(tmp_path), monkeypatch), "ada")
    app.selectbox(key="fleet-pause-model").set_value("fraud")
    _rerun(app)
    app.button(key="fleet-pause").click()  # no reason yet: refused
    _rerun(app)
    assert "The 'reason' parameter of pause_model must be a reason" in app.error[0].value
    assert _stored(tmp_path) == ([], [])
    app.text_input(key="fleet-pause-reason").input("labels are late")
    app.button(key="fleet-pause").click()
    _rerun(app)
    assert app.success[0].value == "model fraud paused by ada: its decisions are suppressed from the next tick."
    assert _table(app).set_index("model").loc["./?page=Model&model=fraud", "paused"] == "⏸ ada: labels are late"
    assert _stored(tmp_path) == (["fraud"], [("model.paused", "ada", "model fraud")])
    app.button(key="fleet-resume").click()
    _rerun(app)
    assert app.success[0].value.startswith("model fraud resumed by ada (it was model fraud paused by ada")
    assert _stored(tmp_path) == ([], [("model.paused", "ada", "model fraud"), ("model.resumed", "ada", "model fraud")])


def test_viewers_and_approvers_see_no_pause_controls(tmp_path, monkeypatch):
    config = _fleet(tmp_path)
    for name in ("vic", "ann"):
        app = sign_in(open_app(config, monkeypatch), name)
        assert app.dataframe and not _controls(app) and not app.selectbox
        assert "Pause or resume a model" not in [s.value for s in app.subheader]


def test_an_admin_demoted_since_the_page_was_drawn_is_refused_and_nothing_is_paused(tmp_path, monkeypatch):
    app = sign_in(open_app(_fleet(tmp_path), monkeypatch), "ada")
    UsersFile(tmp_path / "users.yaml").add("ada", Role.viewer, PASSWORD)
    app.text_input(key="fleet-pause-reason").input("labels are late")
    app.button(key="fleet-pause").click()
    _rerun(app)
    assert "ada (viewer) may not pause model churn: that needs the admin role or higher" in app.error[0].value
    assert _stored(tmp_path) == ([], []) and not _controls(app)


def test_an_empty_knowledge_base_says_that_no_model_is_registered_yet(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'mape.db'}"
    upgrade(url)
    UsersFile(tmp_path / "users.yaml").add("vic", Role.viewer, PASSWORD)
    config = tmp_path / "mape.yaml"
    config.write_text(yaml.safe_dump({"db_url": url, "access": {"users_file": "users.yaml"}}))
    app = sign_in(open_app(config, monkeypatch), "vic")
    assert "No managed model is in the knowledge base yet" in app.info[0].value
    assert not app.dataframe and not app.metric


def test_health_and_freshness_cells_and_the_label_filter_on_their_own():
    now = utcnow()
    assert health({"warning": 2, "info": 1, "critical": 1, "weird": 1}) == \
        "🔴 critical 1 · 🟠 warning 2 · 🟡 info 1 · ⚪ weird 1"
    sensors = {"drift": "drift.n_current", "performance": "performance.n_labelled"}
    signals = {"drift.n_current": now - timedelta(minutes=29), "performance.n_labelled": now - timedelta(minutes=31)}
    assert freshness(signals, sensors, now=now, stale_after=timedelta(minutes=30)) == \
        "🟠 stale: performance (31 min ago)"
    assert freshness(signals, sensors, now=now, stale_after=timedelta(hours=1)) == "🟢 fresh"
    rows = [FleetRow(model_id=1, name="a", owner="x", labels={"team": "t1"}),
            FleetRow(model_id=2, name="b", owner="y", labels={"team": "t2", "tier": "gold"})]
    assert [r.name for r in select_rows(rows, labels=["team=t1", "team=t2"])] == ["a", "b"]
    assert [r.name for r in select_rows(rows, labels=["team=t1", "tier=gold"])] == []
    with pytest.raises(ValueError, match="must hold key=value pairs. Got 'gold' instead."):
        select_rows(rows, labels=["gold"])
