"""``mape policy mode``: an admin sets or clears a policy's mode override, with the dashboard's check and audit event."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlmodel import select
from typer.testing import CliRunner

from knowledge.database import create_engine_for, session_scope
from knowledge.tables import AuditEvent, PolicyModeOverride
from mape.access import Role, UsersFile
from mape.cli import app

runner = CliRunner()
PASSWORD = "correct horse battery"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "mape.yaml"
    path.write_text(yaml.safe_dump({"db_url": "sqlite:///kb.db"}))
    return path


def _stored(config: Path) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, dict]]]:  # type: ignore[type-arg]
    engine = create_engine_for(f"sqlite:///{config.parent / 'kb.db'}")
    try:
        with session_scope(engine) as session:
            rows = [(r.policy_name, r.mode, r.set_by) for r in session.exec(select(PolicyModeOverride))]
            events = [(e.kind, e.actor, e.payload) for e in session.exec(select(AuditEvent).order_by(AuditEvent.id))
                      if e.kind == "policy.mode_changed"]
            return rows, events
    finally:
        engine.dispose()


def _mode(config: Path, *args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["policy", "mode", *args, "--config", str(config)], env=env)


def test_set_show_and_clear_a_mode_as_the_local_operator(config: Path):
    result = _mode(config, "retrain-on-drift", "dry-run", "--reason", "incident 42", "--actor", "alice")
    assert result.exit_code == 0, result.output
    assert "policy retrain-on-drift set to dry-run by alice at " in result.output
    assert "from the next tick" in result.output
    assert "warning: no policy named 'retrain-on-drift' was ever loaded" in result.output
    shown = _mode(config, "retrain-on-drift")
    assert shown.exit_code == 0 and "set to dry-run by alice" in shown.output and "incident 42" in shown.output
    cleared = _mode(config, "retrain-on-drift", "--clear", "--reason", "fixed", "--actor", "bob")
    assert cleared.exit_code == 0, cleared.output
    assert "override dry-run lifted by bob" in cleared.output
    assert "no mode override" in _mode(config, "retrain-on-drift").output
    rows, events = _stored(config)
    assert rows == []
    assert [(kind, actor, p["mode"], p["previous_override"], p["reason"], p["role"]) for kind, actor, p in events] == [
        ("policy.mode_changed", "alice", "dry-run", None, "incident 42", "admin"),
        ("policy.mode_changed", "bob", None, "dry-run", "fixed", "admin")]


def test_bad_input_is_refused_naming_the_value(config: Path):
    wrong = _mode(config, "p", "paused", "--reason", "x", "--actor", "alice")
    assert wrong.exit_code == 2
    assert "The 'mode' parameter of set_policy_mode must be one of enforce, dry-run, off. Got 'paused'" in wrong.output
    no_reason = _mode(config, "p", "off", "--actor", "alice")
    assert no_reason.exit_code == 2 and "'reason' parameter of set_policy_mode" in no_reason.output
    both = _mode(config, "p", "off", "--clear", "--reason", "x")
    assert both.exit_code == 2 and "not both" in both.output
    nothing = _mode(config, "p", "--clear", "--reason", "x", "--actor", "alice")
    assert nothing.exit_code == 2 and "no mode override to clear" in nothing.output
    assert _stored(config) == ([], [])


def test_with_a_users_file_only_an_admin_may_change_a_mode(config: Path):
    people = UsersFile(config.parent / "users.yaml")
    people.add("vic", Role.viewer, PASSWORD)
    people.add("ada", Role.admin, PASSWORD)
    config.write_text(yaml.safe_dump({"db_url": "sqlite:///kb.db", "access": {"users_file": "users.yaml"}}))
    env = {"MAPE_PASSWORD": PASSWORD}
    denied = _mode(config, "p", "off", "--reason", "x", "--user", "vic", env=env)
    assert denied.exit_code == 3
    assert "vic (viewer) may not change the mode of policy p: that needs the admin role" in denied.output
    assert _stored(config) == ([], [])
    allowed = _mode(config, "p", "off", "--reason", "x", "--user", "ada", env=env)
    assert allowed.exit_code == 0, allowed.output
    rows, events = _stored(config)
    assert rows == [("p", "off", "ada")] and events[0][2]["signed_in_via"] == "password"
