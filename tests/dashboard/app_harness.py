"""What every dashboard page test needs: a knowledge base with people in a users file, the app, and sign-in."""

from __future__ import annotations

from pathlib import Path

import yaml
from streamlit.testing.v1 import AppTest

from knowledge import registry
from knowledge.database import create_engine_for, session_scope
from knowledge.migrate import upgrade
from knowledge.tables import Decision
from mape.access import Role, UsersFile

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
PASSWORD = "correct horse battery"


def knowledge_base(tmp_path: Path, *, users: bool = True) -> Path:
    """A knowledge base with one model in production and one decision, and the configuration naming it."""
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
    config = tmp_path / "mape.yaml"
    settings: dict = {"db_url": url}
    if users:
        settings["access"] = {"users_file": "users.yaml"}
        people = UsersFile(tmp_path / "users.yaml")
        for name, role in (("vic", Role.viewer), ("ann", Role.approver), ("ada", Role.admin)):
            people.add(name, role, PASSWORD)
    config.write_text(yaml.safe_dump(settings))
    return config


def open_app(config: Path, monkeypatch) -> AppTest:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MAPE_CONFIG", str(config))
    monkeypatch.delenv("MAPE_DB_URL", raising=False)
    app = AppTest.from_file(str(APP), default_timeout=30)
    app.run()
    assert not app.exception, app.exception
    return app


def sign_in(app: AppTest, name: str, password: str = PASSWORD) -> AppTest:
    fields = {t.label: t for t in app.text_input}
    fields["Name"].input(name)
    fields["Password"].input(password)
    next(b for b in app.button if b.label == "Sign in").click()
    app.run()
    assert not app.exception, app.exception
    return app


def open_page(app: AppTest, page: str) -> AppTest:
    """Pick ``page`` in the sidebar and draw it."""
    app.sidebar.radio(key="page").set_value(page)
    app.run()
    assert not app.exception, app.exception
    return app
