"""``mape run``'s /metrics learn about ticks from the knowledge base: each finished tick counts once, from then on."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from flows.metrics import MetricsLoop


def test_ticks_finished_after_the_loop_started_are_counted_once_with_their_decisions(tmp_path: Path) -> None:
    from tests.controller.world import make_world

    policies = tmp_path / "policies"
    policies.mkdir()
    world = make_world(tmp_path / "world", policies)
    controller = world.controller
    world.serve_hour(1)
    controller.tick(world.scenario.at(1))  # before the loop: another process's work, not counted

    loop = MetricsLoop(controller.engine, lambda: (len(controller.policies), 2), clock=lambda: world.scenario.at(2))
    assert loop.refresh() == 0
    world.serve_hour(2)
    report = controller.tick(world.scenario.at(2))
    controller.tick(world.scenario.at(2))  # a repeated tick writes no new tick row
    assert loop.refresh() == 1
    assert loop.refresh() == 0  # nothing new: nothing counted twice

    assert loop.metrics.value("mape_ticks_total") == 1.0
    assert loop.metrics.value("mape_policy_errors") == 2.0
    stages = ("monitor", "analyze", "verify", "canary", "plan", "dispatch", "action", "notify", "other")
    assert sum(loop.metrics.value("mape_tick_errors_total", stage=s) or 0 for s in stages) == len(report.errors)
    assert loop.metrics.value("mape_signal_age_seconds", model="credit-risk", root="drift") is not None

    server = loop.start("127.0.0.1", 0)
    try:
        text = urllib.request.build_opener(urllib.request.ProxyHandler({})).open(server.url, timeout=5).read()
    finally:
        loop.stop()
    names = {family.name for family in text_string_to_metric_families(text.decode())}
    assert {"mape_ticks", "mape_actions", "mape_signal_age_seconds", "mape_policies_loaded"} <= names
