"""The dashboard shows nothing before sign-in; signed in, the fleet page renders versions, decisions and the audit chain."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from knowledge.database import create_engine_for
from mape.access import UsersFile
from tests.dashboard.app_harness import knowledge_base, open_app, sign_in


def test_nothing_is_shown_before_sign_in_and_a_wrong_password_is_refused(tmp_path: Path, monkeypatch):
    app = open_app(knowledge_base(tmp_path), monkeypatch)
    assert [t.label for t in app.text_input] == ["Name", "Password"]
    assert not app.header and not app.table and not app.success
    sign_in(app, "ann", "wrong password")
    assert app.error[0].value == "Unknown name or wrong password."
    assert not app.table


def test_without_a_users_file_the_page_says_how_to_set_one_up_and_shows_nothing(tmp_path: Path, monkeypatch):
    app = open_app(knowledge_base(tmp_path, users=False), monkeypatch)
    assert "Sign-in is not configured" in app.error[0].value and "mape users add" in app.error[0].value
    assert not app.text_input and not app.table


def test_signed_in_the_fleet_page_shows_models_versions_decisions_and_an_intact_audit_chain(tmp_path: Path,
                                                                                          monkeypatch):
    app = sign_in(open_app(knowledge_base(tmp_path), monkeypatch), "vic")
    assert "Signed in as **vic** (viewer)" in [m.value for m in app.sidebar.markdown]
    assert [h.value for h in app.header] == ["credit-risk"]
    assert "audit trail intact" in app.success[0].value
    tables = [t.value for t in app.table]
    versions, decisions = tables[0], tables[2]
    assert list(versions["stage"]) == ["production"]
    assert list(decisions["policy"]) == ["retrain-on-drift"]
    next(b for b in app.sidebar.button if b.label == "Sign out").click()
    app.run()
    assert [t.label for t in app.text_input] == ["Name", "Password"] and not app.table


def test_an_altered_audit_row_is_flagged(tmp_path: Path, monkeypatch):
    config = knowledge_base(tmp_path)
    engine = create_engine_for(f"sqlite:///{tmp_path / 'mape.db'}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_event SET payload = '{}' WHERE id = 2"))
    engine.dispose()
    app = sign_in(open_app(config, monkeypatch), "ada")
    assert "audit trail altered at event 2" in app.error[0].value


def test_a_person_removed_from_the_users_file_is_signed_out_at_the_next_click(tmp_path: Path, monkeypatch):
    config = knowledge_base(tmp_path)
    app = sign_in(open_app(config, monkeypatch), "ann")
    assert app.header
    UsersFile(tmp_path / "users.yaml").remove("ann")
    app.run()
    assert [t.label for t in app.text_input] == ["Name", "Password"] and not app.header
