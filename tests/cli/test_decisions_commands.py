"""``mape decisions list|show|approve|reject`` and ``mape users``: the dashboard's acts, headless, with the same roles."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from sqlmodel import select
from typer.testing import CliRunner

from knowledge.database import create_engine_for, session_scope
from knowledge.migrate import upgrade
from knowledge.tables import AuditEvent, Decision
from mape.cli import app
from mape.plan import Planner
from tests.plan.helpers import add_model, make_policy

runner = CliRunner()
T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)


def _config(tmp_path: Path, *, users: bool) -> Path:
    path = tmp_path / "mape.yaml"
    settings: dict = {"db_url": "sqlite:///kb.db"}
    if users:
        settings["access"] = {"users_file": "users.yaml"}
    path.write_text(yaml.safe_dump(settings))
    upgrade(f"sqlite:///{tmp_path / 'kb.db'}")
    return path


def _gated_decisions(tmp_path: Path) -> list[int]:
    """Two models with a decision awaiting approval, far from expiry, and one decision that needs no approval."""
    engine = create_engine_for(f"sqlite:///{tmp_path / 'kb.db'}")
    try:
        with session_scope(engine) as session:
            careful = Planner([make_policy("careful", approval="required", approval_timeout="3650d")])
            ids = [careful.plan(session, [add_model(session, name)], T0).decisions[name][0].id for name in ("a", "b")]
            eager = Planner([make_policy("eager", action="notify")])
            eager.plan(session, [add_model(session, "c")], T0)
        return ids
    finally:
        engine.dispose()


def _stored(tmp_path: Path, decision_id: int) -> tuple[str, str | None, str]:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'kb.db'}")
    try:
        with session_scope(engine) as session:
            d = session.get(Decision, decision_id)
            kinds = [e.kind for e in session.exec(select(AuditEvent).order_by(AuditEvent.id))]
            return d.status, d.decided_by, ",".join(k for k in kinds if k.startswith("decision."))
    finally:
        engine.dispose()


def _invoke(config: Path, *args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [*args, "--config", str(config)], env=env)


def test_list_filters_and_formats(tmp_path: Path):
    config = _config(tmp_path, users=False)
    first, second = _gated_decisions(tmp_path)
    table = _invoke(config, "decisions", "list", "--status", "awaiting_approval")
    assert table.exit_code == 0, table.output
    lines = table.output.strip().splitlines()
    assert [int(line.split()[0]) for line in lines] == [second, first]  # newest first
    assert "careful -> retrain  awaiting_approval, expires 2036-01-03" in lines[0]
    as_json = json.loads(_invoke(config, "decisions", "list", "--model", "c", "--format", "json").output)
    assert [(r["model"], r["policy"], r["action"], r["status"]) for r in as_json] == [("c", "eager", "notify",
                                                                                      "proposed")]
    rows = list(csv.DictReader(io.StringIO(_invoke(config, "decisions", "list", "--format", "csv").output)))
    assert len(rows) == 3 and set(rows[0]) >= {"id", "model", "policy", "status", "decided_by", "comment"}
    assert _invoke(config, "decisions", "list", "--policy", "nope").output.strip() == "no decisions match"
    bad = _invoke(config, "decisions", "list", "--status", "pending")
    assert bad.exit_code == 2 and "--status must be one of proposed, awaiting_approval" in bad.output
    unknown = _invoke(config, "decisions", "list", "--model", "zzz")
    assert unknown.exit_code == 2 and "no managed model named 'zzz'" in unknown.output


def test_without_a_users_file_the_local_operator_approves_and_rejects(tmp_path: Path):
    config = _config(tmp_path, users=False)
    first, second = _gated_decisions(tmp_path)
    approved = _invoke(config, "decisions", "approve", str(first), "--comment", "ok", "--actor", "ops")
    assert approved.exit_code == 0, approved.output
    assert f"decision {first} (careful -> retrain, approved): approved by ops (admin); the next tick dispatches it" \
        in approved.output
    assert _stored(tmp_path, first) == ("approved", "ops", "decision.approved")
    no_reason = _invoke(config, "decisions", "reject", str(second), "--comment", " ")
    assert no_reason.exit_code == 2 and "a reason" in no_reason.output
    rejected = _invoke(config, "decisions", "reject", str(second), "--comment", "not now", "--actor", "ops")
    assert rejected.exit_code == 0 and "rejected by ops (admin); it is closed" in rejected.output
    again = _invoke(config, "decisions", "approve", str(second))
    assert again.exit_code == 2 and "does not await approval: rejected by ops" in again.output
    shown = _invoke(config, "decisions", "show", str(second))
    assert shown.exit_code == 0 and "rejected by ops" in shown.output and "not now" in shown.output


def test_with_a_users_file_each_act_needs_a_signed_in_user_with_the_role(tmp_path: Path):
    config = _config(tmp_path, users=True)
    first, _ = _gated_decisions(tmp_path)
    for name, role in (("vic", "viewer"), ("ann", "approver"), ("ada", "admin")):
        added = _invoke(config, "users", "add", name, "--role", role, env={"MAPE_NEW_PASSWORD": f"{name}-password"})
        assert added.exit_code == 0, added.output
    listed = _invoke(config, "users", "list")
    assert listed.output.split("\n")[:3] == ["vic  viewer  password", "ann  approver  password",
                                            "ada  admin  password"]
    assert "password" not in (tmp_path / "users.yaml").read_text().replace("password:", "")

    anonymous = _invoke(config, "decisions", "approve", str(first), "--actor", "ops")
    assert anonymous.exit_code == 3 and "sign in with --user NAME" in anonymous.output
    wrong = _invoke(config, "decisions", "approve", str(first), "--user", "ann", env={"MAPE_PASSWORD": "guess"})
    assert wrong.exit_code == 3 and "sign-in failed for 'ann'" in wrong.output
    viewer = _invoke(config, "decisions", "approve", str(first), "--user", "vic", env={"MAPE_PASSWORD": "vic-password"})
    assert viewer.exit_code == 3 and "vic (viewer) may not approve decision" in viewer.output
    assert _stored(tmp_path, first) == ("awaiting_approval", None, "")

    pause = _invoke(config, "pause", "--policy", "careful", "--reason", "incident", "--user", "ann",
                    env={"MAPE_PASSWORD": "ann-password"})
    assert pause.exit_code == 3 and "ann (approver) may not pause policy careful: that needs the admin role" \
        in pause.output
    approved = _invoke(config, "decisions", "approve", str(first), "--user", "ann",
                       env={"MAPE_PASSWORD": "ann-password"})
    assert approved.exit_code == 0 and "approved by ann (approver)" in approved.output
    assert _stored(tmp_path, first) == ("approved", "ann", "decision.approved")
    paused = _invoke(config, "pause", "--policy", "careful", "--reason", "incident", "--user", "ada",
                     env={"MAPE_PASSWORD": "ada-password"})
    assert paused.exit_code == 0 and "paused by ada" in paused.output
    resumed = _invoke(config, "resume", "--policy", "careful", "--user", "ada", env={"MAPE_PASSWORD": "ada-password"})
    assert resumed.exit_code == 0 and "resumed by ada" in resumed.output


@pytest.mark.parametrize("args", [["users", "list"], ["users", "remove", "x"]])
def test_user_commands_need_a_configured_users_file(tmp_path: Path, args: list[str]):
    result = _invoke(_config(tmp_path, users=False), *args)
    assert result.exit_code == 2 and "access.users_file is not set" in result.output


def test_users_add_refuses_an_unknown_role_and_removes(tmp_path: Path):
    config = _config(tmp_path, users=True)
    bad = _invoke(config, "users", "add", "x", "--role", "owner", env={"MAPE_NEW_PASSWORD": "long-enough"})
    assert bad.exit_code == 2 and "--role must be one of viewer, approver, admin (got 'owner')" in bad.output
    oidc = _invoke(config, "users", "add", "bob@example.com", "--role", "admin", "--oidc-only")
    assert oidc.exit_code == 0 and "bob@example.com is an admin" in oidc.output
    assert "bob@example.com  admin  oidc only" in _invoke(config, "users", "list").output
    assert _invoke(config, "users", "remove", "bob@example.com").exit_code == 0
    missing = _invoke(config, "users", "remove", "bob@example.com")
    assert missing.exit_code == 2 and "no user named" in missing.output
