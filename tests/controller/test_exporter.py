"""The controller's own metrics: families after a tick report, gauges from the knowledge base, /metrics on loopback."""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from knowledge.database import session_scope
from knowledge.tables import ActionRun, ActionState, Decision, ManagedModel, Observation
from mape.controller import DecisionSummary, TickReport
from mape.exporter import DEFAULT_HOST, DEFAULT_PORT, ControllerMetrics

AT = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def samples(metrics: ControllerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, parsed back by prometheus_client's own parser: (name, labels) -> value."""
    text = metrics.exposition().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def report(*, errors: list[str] | None = None, decisions: list[DecisionSummary] | None = None,
           repeated: bool = False) -> TickReport:
    return TickReport(at=AT, repeated=repeated, errors=errors or [], decisions=decisions or [])


def decision(id_: int, status: str, action: str) -> DecisionSummary:
    return DecisionSummary(id=id_, model="credit", policy="p", action=action, status=status)


def test_a_tick_report_updates_the_counters() -> None:
    metrics = ControllerMetrics()
    metrics.observe_tick(report(errors=["monitor: model credit: drift: no production version",
                                        "monitor: model fraud: performance: source unreadable",
                                        "action run 4: RuntimeError: boom", "notify: TimeoutError: slow",
                                        "something unforeseen"],
                                decisions=[decision(1, "proposed", "retrain"), decision(2, "dry_run", "rollback"),
                                           decision(3, "proposed", "retrain")]), duration=0.3)
    metrics.set_policies(4, 1)
    found = samples(metrics)
    assert found[("mape_ticks_total", ())] == 1.0
    assert found[("mape_tick_duration_seconds_count", ())] == 1.0
    assert found[("mape_tick_duration_seconds_sum", ())] == pytest.approx(0.3)
    assert found[("mape_tick_duration_seconds_bucket", (("le", "0.5"),))] == 1.0
    assert found[("mape_tick_duration_seconds_bucket", (("le", "0.25"),))] == 0.0
    errors = {labels[0][1]: value for (name, labels), value in found.items() if name == "mape_tick_errors_total"}
    assert errors == {"monitor": 2.0, "analyze": 0.0, "verify": 0.0, "canary": 0.0, "plan": 0.0, "dispatch": 0.0,
                      "action": 1.0, "notify": 1.0, "other": 1.0}
    decisions = {labels: value for (name, labels), value in found.items() if name == "mape_decisions_total"}
    assert decisions == {(("action", "retrain"), ("status", "proposed")): 2.0,
                         (("action", "rollback"), ("status", "dry_run")): 1.0}
    assert found[("mape_policies_loaded", ())] == 4.0
    assert found[("mape_policy_errors", ())] == 1.0
    assert found[("mape_actions", (("state", "running"),))] == 0.0  # not refreshed yet: every state at 0
    assert not [name for name, _ in found if name == "mape_signal_age_seconds"]


def test_every_family_is_there_before_the_first_tick() -> None:
    text = ControllerMetrics().exposition().decode()
    families = {family.name: family.type for family in text_string_to_metric_families(text)
                if not family.name.endswith("_created")}  # present unless prometheus_client's were disabled
    assert families == {"mape_ticks": "counter", "mape_tick_duration_seconds": "histogram",
                        "mape_tick_errors": "counter", "mape_decisions": "counter", "mape_policies_loaded": "gauge",
                        "mape_policy_errors": "gauge", "mape_actions": "gauge", "mape_signal_age_seconds": "gauge"}
    assert "mape_actions{state=\"pending\"} 0.0" in text


def test_a_repeated_tick_does_not_count_its_decisions_twice() -> None:
    metrics = ControllerMetrics()
    metrics.observe_tick(report(decisions=[decision(7, "awaiting_approval", "retrain")]), duration=1.0)
    metrics.observe_tick(report(decisions=[decision(7, "awaiting_approval", "retrain")], repeated=True), duration=0.1)
    assert metrics.value("mape_ticks_total") == 2.0
    assert metrics.value("mape_decisions_total", status="awaiting_approval", action="retrain") == 1.0


def test_the_registry_is_its_own() -> None:
    first, second = ControllerMetrics(), ControllerMetrics()  # no "duplicated timeseries" between them
    first.observe_tick(report(), duration=0.1)
    assert (first.value("mape_ticks_total"), second.value("mape_ticks_total")) == (1.0, 0.0)
    assert prometheus_client.REGISTRY.get_sample_value("mape_ticks_total") is None


def test_the_endpoint_serves_the_metrics_on_loopback() -> None:
    assert (DEFAULT_HOST, DEFAULT_PORT) == ("127.0.0.1", 9464)
    metrics = ControllerMetrics()
    metrics.observe_tick(report(errors=["plan: KeyError: 'x'"]), duration=2.0)
    with metrics.serve("127.0.0.1", 0) as server:
        assert server.host == "127.0.0.1" and server.url == f"http://127.0.0.1:{server.port}/metrics"
        with _OPENER.open(server.url, timeout=5) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            body = response.read().decode()
        assert "mape_ticks_total 1.0" in body
        assert 'mape_tick_errors_total{stage="plan"} 1.0' in body
        with pytest.raises(urllib.error.HTTPError) as caught:
            _OPENER.open(server.url.replace("/metrics", "/"), timeout=5)
        assert caught.value.code == 404
    with pytest.raises(urllib.error.URLError):
        _OPENER.open(server.url, timeout=5)
    server.close()  # twice is harmless


def test_a_taken_port_is_an_oserror() -> None:
    metrics = ControllerMetrics()
    with metrics.serve("127.0.0.1", 0) as server, pytest.raises(OSError):
        metrics.serve("127.0.0.1", server.port)


# ---------------------------------------------------------------------- gauges from the knowledge base


def _fill(engine: Engine) -> None:
    with session_scope(engine) as session:
        credit, fraud = ManagedModel(name="credit"), ManagedModel(name="fraud")
        session.add_all([credit, fraud])
        session.flush()
        rows = [
            (credit, "drift", "drift.share_drifted", AT - timedelta(minutes=10), {}),
            (credit, "drift", "drift.feature.p_value", AT - timedelta(minutes=5), {"feature": "income", "test": "ks"}),
            (credit, "prometheus", "serving.latency_p95_ms", AT - timedelta(minutes=1), {}),
            (credit, "serving", "serving.replicas", AT - timedelta(minutes=3), {}),
            (credit, "carbon", "carbon.intensity", AT - timedelta(days=2), {}),  # past the lookback
            (fraud, "performance", "performance.accuracy", AT - timedelta(hours=2), {}),
            (fraud, "gpu", "gpu.utilization", AT + timedelta(hours=1), {}),  # after the refresh time
        ]
        session.add_all([Observation(time=t, model_id=m.id, sensor=s, metric=metric, value=0.5, labels=labels)
                         for m, s, metric, t, labels in rows])
        for index, state in enumerate(["running", "succeeded", "succeeded", "failed"]):
            row = Decision(model_id=credit.id, policy_name="p", action="retrain", status="proposed",
                           dedup_key=f"k{index}", created_at=AT)
            session.add(row)
            session.flush()
            session.add(ActionRun(decision_id=row.id, model_id=credit.id, action="retrain",
                                  idempotency_key=f"run{index}", state=state))


def test_signal_age_and_action_states_come_from_the_knowledge_base(engine: Engine) -> None:
    _fill(engine)
    metrics = ControllerMetrics()
    with session_scope(engine) as session:
        metrics.refresh_from_knowledge(session, AT)
    found = samples(metrics)
    ages = {dict(labels)["model"] + "/" + dict(labels)["root"]: value
            for (name, labels), value in found.items() if name == "mape_signal_age_seconds"}
    assert ages == {"credit/drift": 300.0, "credit/serving": 60.0, "fraud/performance": 7200.0}
    actions = {dict(labels)["state"]: value for (name, labels), value in found.items() if name == "mape_actions"}
    assert actions == {state.value: 0.0 for state in ActionState} | {"running": 1.0, "succeeded": 2.0, "failed": 1.0}

    with session_scope(engine) as session:  # an hour on: ages grow, the future gpu row is now fresh
        metrics.refresh_from_knowledge(session, AT + timedelta(hours=1), lookback=timedelta(hours=2))
    assert metrics.value("mape_signal_age_seconds", model="credit", root="drift") == 3900.0
    assert metrics.value("mape_signal_age_seconds", model="fraud", root="gpu") == 0.0
    assert metrics.value("mape_signal_age_seconds", model="fraud", root="performance") is None  # past the lookback


def test_a_real_controller_tick(tmp_path: Path) -> None:
    from tests.controller.world import make_world

    policies = tmp_path / "policies"
    policies.mkdir()
    world = make_world(tmp_path / "world", policies)
    world.serve_hour(1)
    at = world.scenario.at(1)
    tick = world.controller.tick(at)
    metrics = ControllerMetrics()
    metrics.observe_tick(tick, duration=0.5)
    metrics.set_policies(len(world.controller.policies), len(world.controller.policy_errors))
    with session_scope(world.controller.engine) as session:
        metrics.refresh_from_knowledge(session, at)
    assert metrics.value("mape_ticks_total") == 1.0
    assert sum(metrics.value("mape_tick_errors_total", stage=s) or 0 for s in ("monitor", "plan")) == len(tick.errors)
    assert metrics.value("mape_signal_age_seconds", model="credit-risk", root="drift") == 0.0
    assert metrics.value("mape_signal_age_seconds", model="credit-risk", root="performance") == 0.0
    assert metrics.value("mape_policies_loaded") == 0.0
