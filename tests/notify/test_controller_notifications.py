"""Each tick notifies approvals waiting, the notify action and failed actions; a dead channel never fails a tick.

A real managed system (the credit example) and real HTTP receivers on
loopback; the knowledge base is SQLite or PostgreSQL (``db_url``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from sqlmodel import col, select

from examples.credit.demo import MODEL, Scenario, bootstrap, write_config
from examples.credit.serving import CreditServing
from knowledge.database import session_scope
from knowledge.tables import ActionRun, AuditEvent, Notification
from mape.config import load_settings
from mape.controller import Controller
from tests.controller.world import World
from tests.notify.receiver import closed_port, webhook_receiver

DASHBOARD = "http://dashboard.example:8501"


def _world(tmp_path: Path, policies: dict[str, str], notifications: dict[str, Any], db_url: str | None = None) -> World:
    directory = tmp_path / "world"
    directory.mkdir()
    policies_dir = tmp_path / "policies"
    policies_dir.mkdir()
    for name, text in policies.items():
        (policies_dir / f"{name}.yaml").write_text(text)
    scenario = Scenario(rows_per_hour=400, history_hours=12)
    config_path = write_config(directory, policies_dir)
    data = yaml.safe_load(config_path.read_text())
    data["notifications"] = {"dashboard_url": DASHBOARD, "timeout": 1, "retry_delay": "1m", **notifications}
    if db_url is not None:
        data["db_url"] = db_url
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    controller = Controller(load_settings(config_path))
    serving = CreditServing(directory / "data", controller.engine, MODEL, rows_per_hour=400, seed=scenario.seed)
    bootstrap(serving, controller.engine, Path(controller.settings.artifacts_dir), scenario)
    return World(directory, config_path, controller, serving, scenario)


def _policy(name: str, action: str, extra: str = "") -> str:
    return (f"apiVersion: mape/v1\nkind: Policy\nmetadata: {{name: {name}}}\nspec:\n"
            f"  when: \"has(drift.share_drifted)\"\n  action: {action}\n  cooldown: 0s\n{extra}")


def test_a_decision_awaiting_approval_reaches_its_channels_once_with_evidence_and_link(tmp_path, db_url):
    with webhook_receiver() as ops, webhook_receiver() as ml:
        world = _world(tmp_path, {"careful": _policy("careful", "{type: retrain}",
                                                     "  approval: required\n  notify: [ml]\n")},
                       {"channels": {"ops": {"urls": [ops.url()]}, "ml": {"urls": [ml.url()], "events": []}}},
                       db_url=db_url)
        world.serve_hour(1)
        report = world.controller.tick(world.scenario.at(1))
        again = world.controller.tick(world.scenario.at(1))  # a repeated tick queues and sends nothing new

    assert not report.errors and not report.warnings and again.repeated
    (decision,) = report.decisions
    assert decision.status == "awaiting_approval"
    for hook in (ops, ml):  # ops by its subscription, ml through the policy's notify
        (request,) = hook.requests
        assert request.body["title"] == f"[mape] {MODEL}: retrain awaits approval (policy careful)"
        message = request.body["message"]
        assert "Condition: has(drift.share_drifted)" in message
        assert "Evidence: drift.share_drifted = " in message
        assert f"Dashboard: {DASHBOARD}/?decision={decision.id}" in message
    with session_scope(world.controller.engine) as session:
        rows = session.exec(select(Notification).order_by(col(Notification.channel))).all()
        assert [(r.channel, r.event, r.state, r.decision_id) for r in rows] == [
            ("ml", "awaiting_approval", "sent", decision.id), ("ops", "awaiting_approval", "sent", decision.id)]


def test_the_notify_action_sends_in_the_same_tick_and_succeeds(tmp_path):
    with webhook_receiver() as ops:
        world = _world(tmp_path, {"tell": _policy(
            "tell", "{type: notify, params: {channels: [ops], title: Drift measured, message: Please have a look.}}")},
            {"channels": {"ops": {"urls": [ops.url()], "events": []}}})
        world.serve_hour(1)
        report = world.controller.tick(world.scenario.at(1))

    assert not report.errors, report.errors
    (run,) = report.actions
    assert (run.action, run.state, run.result["channels"]) == ("notify", "succeeded", ["ops"])
    (request,) = ops.requests
    assert request.body["title"] == "Drift measured"
    assert request.body["message"].startswith("Please have a look.\nModel: credit-risk\nDecision ")
    assert f"/?decision={report.decisions[0].id}" in request.body["message"]


def test_a_failed_action_is_reported_and_a_dead_channel_only_warns_and_is_retried_next_tick(tmp_path, db_url):
    dead = f"json://127.0.0.1:{closed_port()}/hook"
    with webhook_receiver() as ops:
        world = _world(tmp_path, {"undo": _policy("undo", "{type: rollback}")},  # v1 only: nothing to roll back to
                       {"channels": {"ops": {"urls": [ops.url()]}, "dead": {"urls": [dead]}}}, db_url=db_url)
        world.serve_hour(1)
        started = time.monotonic()
        first = world.controller.tick(world.scenario.at(1))
        elapsed = time.monotonic() - started
        world.serve_hour(2)
        second = world.controller.tick(world.scenario.at(2))

    assert not first.errors and not second.errors  # a dead channel never fails a tick
    assert first.actions[0].state == "failed"
    assert any("notify: notification" in w and "to dead failed (attempt 1 of 5)" in w for w in first.warnings)
    assert any("to dead failed (attempt 2 of 5)" in w for w in second.warnings)  # retried on the next tick
    assert elapsed < 60
    failed = [r for r in ops.requests if "rollback failed" in r.body["title"]]
    assert len(failed) == 2 and failed[0].body["type"] == "failure"  # one failed run per tick, each told once
    assert "Error: failed after 1 attempt(s): PermanentActionError" in failed[0].body["message"]
    with session_scope(world.controller.engine) as session:
        runs = session.exec(select(ActionRun).order_by(col(ActionRun.id))).all()
        assert [f"Action run: {r.id}" in m.body["message"] for r, m in zip(runs, failed)] == [True, True]
        kinds = [e.kind for e in session.exec(select(AuditEvent).order_by(col(AuditEvent.id)))
                 if e.kind.startswith("notification.")]
    assert kinds.count("notification.sent") == 2 and kinds.count("notification.retrying") == 3


def test_a_policy_naming_an_unconfigured_channel_is_refused_and_the_others_load(tmp_path):
    world = _world(tmp_path, {"typo": _policy("typo", "{type: retrain}", "  notify: [opps]\n"),
                              "fine": _policy("fine", "{type: retrain}", "  notify: [ops]\n")},
                   {"channels": {"ops": {"urls": ["json://127.0.0.1:9/hook"]}}})
    assert [p.name for p in world.controller.policies] == ["fine"]
    (error,) = world.controller.policy_errors
    assert "typo.yaml" in error and "spec.notify[0]" in error
    assert "unknown notification channel 'opps' (did you mean 'ops'?)" in error
