"""``mape pause``, ``mape resume`` and ``mape pauses``: what a person types to hold a policy or a model back."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from sqlmodel import select
from typer.testing import CliRunner

from knowledge.database import create_engine_for, session_scope
from knowledge.tables import AuditEvent
from mape.cli import app
from mape.plan import Planner
from tests.plan.helpers import add_model, make_policy

runner = CliRunner()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "mape.yaml"
    path.write_text(yaml.safe_dump({"db_url": "sqlite:///kb.db"}))
    return path


def _events(config: Path) -> list[tuple[str, str, str]]:
    engine = create_engine_for(f"sqlite:///{config.parent / 'kb.db'}")
    try:
        with session_scope(engine) as session:
            return [(e.kind, e.actor, e.subject) for e in session.exec(select(AuditEvent).order_by(AuditEvent.id))]
    finally:
        engine.dispose()


def test_pause_list_and_resume_a_policy(config: Path):
    paused = runner.invoke(app, ["pause", "--policy", "retrain-on-drift", "--reason", "incident 42",
                                 "--actor", "alice", "--config", str(config)])
    assert paused.exit_code == 0, paused.output
    assert "policy retrain-on-drift paused by alice at " in paused.output and "incident 42" in paused.output
    assert "mape resume --policy retrain-on-drift" in paused.output
    assert (config.parent / "kb.db").exists()  # relative to the configuration file

    listed = runner.invoke(app, ["pauses", "--config", str(config)])
    assert listed.exit_code == 0
    (line,) = listed.output.strip().splitlines()
    assert line.startswith("policy retrain-on-drift paused by alice at ") and line.endswith(": incident 42")

    resumed = runner.invoke(app, ["resume", "--policy", "retrain-on-drift", "--actor", "bob", "--config", str(config)])
    assert resumed.exit_code == 0, resumed.output
    assert "policy retrain-on-drift resumed by bob" in resumed.output
    assert runner.invoke(app, ["pauses", "--config", str(config)]).output.strip() == "nothing is paused"
    assert [e for e in _events(config) if e[0] != "policy.loaded"] == [
        ("policy.paused", "alice", "policy retrain-on-drift"), ("policy.resumed", "bob", "policy retrain-on-drift")]


def test_a_model_paused_from_the_command_line_is_suppressed_by_the_planner(config: Path):
    result = runner.invoke(app, ["pause", "--model", "m", "--reason", "migrating", "--actor", "alice",
                                 "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "warning: no model named 'm' is known yet" in result.output  # a typo would show here
    engine = create_engine_for(f"sqlite:///{config.parent / 'kb.db'}")
    try:
        with session_scope(engine) as session:
            model = add_model(session, "m")
            at = datetime(2026, 1, 5, tzinfo=timezone.utc)
            (decision,) = Planner([make_policy("p")]).plan(session, [model], at).decisions["m"]
    finally:
        engine.dispose()
    assert decision.status == "suppressed"
    assert decision.reason.startswith("paused: model m paused by alice at ") and decision.reason.endswith(": migrating")


def test_pausing_twice_keeps_the_first_pause(config: Path):
    runner.invoke(app, ["pause", "--model", "m", "--reason", "first", "--actor", "alice", "--config", str(config)])
    again = runner.invoke(app, ["pause", "--model", "m", "--reason", "second", "--actor", "bob",
                                "--config", str(config)])
    assert again.exit_code == 0
    assert "model m is already paused: model m paused by alice" in again.output and "first" in again.output
    assert [e[0] for e in _events(config)] == ["model.paused"]


@pytest.mark.parametrize(("command", "target", "what"), [
    ("pause", [], "neither"), ("resume", [], "neither"), ("pause", ["--policy", "p", "--model", "m"], "both")])
def test_neither_or_both_targets_exit_2_with_a_clear_message(config: Path, command: str, target: list[str],
                                                              what: str):
    # (`mape resume --policy P --model M` is the one command that names both: it lifts a verification block)
    extra = ["--reason", "x"] if command == "pause" else []
    result = runner.invoke(app, [command, *target, *extra, "--config", str(config)])
    assert result.exit_code == 2
    assert f"error: name exactly one of --policy NAME or --model NAME (got {what})" in result.output
    assert not (config.parent / "kb.db").exists()  # refused before touching the knowledge base


def test_resuming_what_is_not_paused_exits_2(config: Path):
    result = runner.invoke(app, ["resume", "--model", "m", "--config", str(config)])
    assert result.exit_code == 2
    assert "error: model m is not paused (see mape pauses)" in result.output
    assert [e for e in _events(config) if e[0].endswith("resumed")] == []


def test_a_pause_needs_a_reason(config: Path):
    missing = runner.invoke(app, ["pause", "--policy", "p", "--config", str(config)])
    assert missing.exit_code == 2 and "--reason" in missing.output
    blank = runner.invoke(app, ["pause", "--policy", "p", "--reason", "  ", "--config", str(config)])
    assert blank.exit_code == 2 and "--reason must say why" in blank.output


def test_resume_with_policy_and_model_lifts_a_verification_block(config: Path):
    from knowledge.tables import ActionRun, Decision

    at = datetime(2026, 1, 5, 10, tzinfo=timezone.utc)
    assert runner.invoke(app, ["pauses", "--config", str(config)]).exit_code == 0  # creates the knowledge base
    engine = create_engine_for(f"sqlite:///{config.parent / 'kb.db'}")
    try:
        with session_scope(engine) as session:
            model = add_model(session, "m")
            decision = Decision(created_at=at, tick_at=at, model_id=model.id, policy_name="retrain-on-drift",
                                action="retrain", status="proposed", dedup_key="m/retrain-on-drift/t")
            session.add(decision)
            session.flush()
            session.add(ActionRun(decision_id=decision.id, model_id=model.id, action="retrain", state="succeeded",
                                  idempotency_key="k", verdict="fail", verdict_at=at))
    finally:
        engine.dispose()
    lifted = runner.invoke(app, ["resume", "--policy", "retrain-on-drift", "--model", "m", "--actor", "alice",
                                 "--reason", "data fixed upstream", "--config", str(config)])
    assert lifted.exit_code == 0, lifted.output
    assert "policy retrain-on-drift may act on model m again: block of run 1 lifted by alice" in lifted.output
    assert ("verification.block_lifted", "alice", "policy retrain-on-drift on model_id=1") in _events(config)
    again = runner.invoke(app, ["resume", "--policy", "retrain-on-drift", "--model", "m", "--config", str(config)])
    assert again.exit_code != 0 and "is not blocked on model m by a verification" in again.output
