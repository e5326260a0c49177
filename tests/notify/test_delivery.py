"""The outbox delivers to a real webhook on loopback, retries a failing channel on later ticks, records each attempt.

Every test runs on SQLite and PostgreSQL (``db_url``); the channels are Apprise
``json://`` URLs pointing at HTTP servers on 127.0.0.1 that these tests start.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import col, select

from knowledge import audit
from knowledge.database import session_scope
from knowledge.tables import AuditEvent, Decision, ManagedModel, Notification
from mape.config import NotificationSettings
from mape.notify import deliver, enqueue
from tests.notify.receiver import closed_port, silent_server, webhook_receiver

AT = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)
EVIDENCE = {"when": "drift.share_drifted > 0.3 && performance.accuracy_drop > 0.03", "mode": "enforce",
            "context": {"drift": {"share_drifted": 0.42}, "performance": {"accuracy_drop": 0.061}}}


def _settings(*urls: str, **kwargs) -> NotificationSettings:  # type: ignore[no-untyped-def]
    return NotificationSettings(channels={"ops": {"urls": list(urls)}}, dashboard_url="http://dash.example:8501",
                                **{"retry_delay": "1m", "timeout": 2.0, **kwargs})


def _decision(engine, status: str = "awaiting_approval") -> Decision:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        model = ManagedModel(name="credit", training_entrypoint="a.b:c")
        session.add(model)
        session.flush()
        decision = Decision(created_at=AT, tick_at=AT, model_id=model.id, policy_name="careful-retrain",
                            action="retrain", params={"window": "4h"}, evidence=EVIDENCE, status=status,
                            reason="awaiting approval", dedup_key=f"credit/careful-retrain/{AT.isoformat()}")
        session.add(decision)
        session.flush()
        return decision


def _queue(engine, settings: NotificationSettings,  # type: ignore[no-untyped-def]
           decision: Decision) -> list[Notification]:
    with session_scope(engine) as session:
        return enqueue(session, settings, "awaiting_approval", at=AT, decision=decision)


def _events(engine, prefix: str = "notification.") -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        return [e for e in session.exec(select(AuditEvent).order_by(col(AuditEvent.id))) if e.kind.startswith(prefix)]


def _row(engine, notification_id: int) -> Notification:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        row = session.get(Notification, notification_id)
        assert row is not None
        return row


def test_the_webhook_receives_the_decision_its_evidence_and_its_dashboard_link(engine):
    decision = _decision(engine)
    with webhook_receiver() as hook:
        settings = _settings(hook.url("/hooks/ops"))
        (queued,) = _queue(engine, settings, decision)
        report = deliver(engine, settings, AT, actor="test")

    assert report.sent == [f"notification {queued.id} to ops"] and not report.problems
    (request,) = hook.requests
    assert request.path == "/hooks/ops"
    assert request.body["title"] == "[mape] credit: retrain awaits approval (policy careful-retrain)"
    assert request.body["type"] == "warning"
    message = request.body["message"]
    assert f"Decision {decision.id} of policy careful-retrain: retrain (awaiting_approval)" in message
    assert "Condition: drift.share_drifted > 0.3 && performance.accuracy_drop > 0.03" in message
    assert "Evidence: drift.share_drifted = 0.42; performance.accuracy_drop = 0.061" in message
    assert f"Dashboard: http://dash.example:8501/?decision={decision.id}" in message

    row = _row(engine, queued.id)
    assert (row.state, row.attempts, row.sent_at, row.last_error) == ("sent", 1, AT, "")
    (event,) = _events(engine)
    assert event.kind == "notification.sent" and event.time == AT
    assert event.payload["channel"] == "ops" and event.payload["attempts"] == 1
    assert event.payload["targets"] == [f"json://127.0.0.1:{hook.port}/hooks/ops"]
    with session_scope(engine) as session:
        assert audit.verify_chain(session).ok


def test_a_channel_answering_500_is_retried_on_a_later_tick_and_every_attempt_is_audited(engine):
    decision = _decision(engine)
    with webhook_receiver(statuses=[500, 200]) as hook:
        settings = _settings(hook.url())
        (queued,) = _queue(engine, settings, decision)

        first = deliver(engine, settings, AT, actor="test")
        assert not first.sent and len(first.retrying) == 1 and "retrying in 60s" in first.retrying[0]
        row = _row(engine, queued.id)
        assert (row.state, row.attempts, row.next_attempt_at) == ("pending", 1, AT + timedelta(minutes=1))
        assert "500" in row.last_error

        assert deliver(engine, settings, AT, actor="test").as_dict() == {  # the same tick again: not due yet
            "sent": [], "retrying": [], "failed": [], "deferred": 0}
        second = deliver(engine, settings, AT + timedelta(minutes=5), actor="test")

    assert second.sent == [f"notification {queued.id} to ops"]
    assert [r.status for r in hook.requests] == [500, 200]
    assert hook.requests[0].body == hook.requests[1].body  # the same message, as queued
    row = _row(engine, queued.id)
    assert (row.state, row.attempts, row.sent_at) == ("sent", 2, AT + timedelta(minutes=5))
    retrying, sent = _events(engine)
    assert retrying.kind == "notification.retrying" and retrying.time == AT
    assert retrying.payload["channel"] == "ops" and retrying.payload["attempts"] == 1
    assert "500" in retrying.payload["error"]
    assert retrying.payload["next_attempt_at"] == (AT + timedelta(minutes=1)).isoformat()
    assert sent.kind == "notification.sent" and sent.payload["attempts"] == 2


def test_after_max_attempts_the_notification_is_given_up_and_recorded_as_failed(engine):
    decision = _decision(engine)
    with webhook_receiver(statuses=[503]) as hook:
        settings = _settings(hook.url(), max_attempts=3, retry_delay="1m", max_retry_delay="90s")
        (queued,) = _queue(engine, settings, decision)
        at = AT
        for _ in range(3):
            report = deliver(engine, settings, at, actor="test")
            at += timedelta(minutes=2)
        assert deliver(engine, settings, at + timedelta(days=1), actor="test").as_dict()["failed"] == []

    assert len(hook.requests) == 3
    assert report.failed and "giving up" in report.failed[0]
    row = _row(engine, queued.id)
    assert (row.state, row.attempts) == ("failed", 3)
    kinds = [e.kind for e in _events(engine)]
    assert kinds == ["notification.retrying", "notification.retrying", "notification.failed"]
    waits = [e.payload["next_attempt_at"] for e in _events(engine)[:2]]
    assert waits == [(AT + timedelta(minutes=1)).isoformat(), (AT + timedelta(minutes=2, seconds=90)).isoformat()]


def test_an_unreachable_channel_costs_at_most_its_timeout_and_never_raises(engine):
    decision = _decision(engine)
    with silent_server() as silent:
        settings = _settings(f"json://127.0.0.1:{closed_port()}/hook", f"json://127.0.0.1:{silent}/hook",
                             timeout=0.5)
        (queued,) = _queue(engine, settings, decision)
        started = time.monotonic()
        report = deliver(engine, settings, AT, actor="test")
        elapsed = time.monotonic() - started

    assert elapsed < 3.0, elapsed  # refused at once; the silent one after the 0.5 s read timeout
    assert len(report.retrying) == 1 and not report.sent
    row = _row(engine, queued.id)
    assert row.state == "pending" and row.attempts == 1
    assert row.last_error.count("Connection error") == 2, row.last_error


def test_a_retry_sends_only_to_the_urls_that_have_not_got_the_message(engine):
    decision = _decision(engine)
    with webhook_receiver() as good, webhook_receiver(statuses=[500, 200]) as flaky:
        settings = _settings(good.url(), flaky.url())
        (queued,) = _queue(engine, settings, decision)
        deliver(engine, settings, AT, actor="test")
        deliver(engine, settings, AT + timedelta(minutes=1), actor="test")

    assert len(good.requests) == 1 and [r.status for r in flaky.requests] == [500, 200]
    assert _row(engine, queued.id).state == "sent"


def test_secrets_in_urls_never_reach_the_knowledge_base(engine, monkeypatch):
    monkeypatch.setenv("MAPE_TEST_HOOK_PASSWORD", "pa55w0rd-not-for-the-audit-trail")
    decision = _decision(engine)
    with webhook_receiver(statuses=[500, 200]) as hook:
        url = f"json://ops:${{MAPE_TEST_HOOK_PASSWORD}}@127.0.0.1:{hook.port}/hook"
        settings = _settings(url)
        _queue(engine, settings, decision)
        deliver(engine, settings, AT, actor="test")
        deliver(engine, settings, AT + timedelta(minutes=1), actor="test")

    assert [r.user for r in hook.requests] == ["ops:pa55w0rd-not-for-the-audit-trail"] * 2  # the secret was sent
    with session_scope(engine) as session:
        stored = json.dumps([e.payload for e in session.exec(select(AuditEvent))]) + json.dumps(
            [r.model_dump(mode="json") for r in session.exec(select(Notification))])
    assert "pa55w0rd" not in stored
    assert f"json://ops:****@127.0.0.1:{hook.port}/hook" in stored


def test_queueing_the_same_event_twice_adds_nothing_and_channels_follow_their_subscriptions(engine):
    decision = _decision(engine)
    settings = NotificationSettings(channels={
        "ops": {"urls": ["json://127.0.0.1:9/a"]},  # default events: awaiting_approval among them
        "audit": {"urls": ["json://127.0.0.1:9/b"], "events": ["decision"]},
        "ml": {"urls": ["json://127.0.0.1:9/c"], "events": ["action_failed"]},
    })
    with session_scope(engine) as session:
        first = enqueue(session, settings, "awaiting_approval", at=AT, decision=decision, channels=["ml"])
        again = enqueue(session, settings, "awaiting_approval", at=AT, decision=decision, channels=["ml"])
    assert sorted(r.channel for r in first) == ["ml", "ops"] and again == []


def test_the_time_budget_defers_what_it_cannot_send_to_the_next_tick(engine):
    with silent_server() as silent:
        settings = _settings(f"json://127.0.0.1:{silent}/hook", timeout=0.3, budget="0.2s")
        with session_scope(engine) as session:
            model = ManagedModel(name="credit", training_entrypoint="a.b:c")
            session.add(model)
            session.flush()
            for i in range(3):
                enqueue(session, settings, "escalation", at=AT, model="credit", key=f"case-{i}")
        started = time.monotonic()
        report = deliver(engine, settings, AT, actor="test")
        assert time.monotonic() - started < 2.0
    assert len(report.retrying) == 1 and report.deferred == 2
    with session_scope(engine) as session:
        assert sorted(r.attempts for r in session.exec(select(Notification))) == [0, 0, 1]


@pytest.mark.parametrize("event", ["awaiting_approval", "action_failed"])
def test_a_channel_removed_from_the_configuration_fails_its_queued_notifications_at_once(engine, event):
    decision = _decision(engine)
    with session_scope(engine) as session:
        (queued,) = enqueue(session, _settings("json://127.0.0.1:9/hook"), event, at=AT, decision=decision)
    report = deliver(engine, NotificationSettings(), AT, actor="test")
    assert report.failed and "no longer configured" in report.failed[0]
    assert _row(engine, queued.id).state == "failed"
