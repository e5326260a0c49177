"""The controller's tick runs a canary end to end: a policy's retrain starts it, later ticks widen and promote it.

The tick's own stages do everything (Monitor, verification, the canary stage,
planning, the executor), against real model-server replicas on loopback; the
test only plays the clients, sending requests to the replicas and logging what
each served.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from knowledge import registry
from knowledge.database import session_scope
from mape.config import settings_from_mapping
from mape.controller import Controller
from mape.execute.serving import production_artifact
from mape.serving.local import LocalReplicaSet
from tests.execute.canary_world import EXPECT, HOUR, make_world, model_settings, predict

PORTS = (39200, 39299)
SERVING = {"replicas": {"min_replicas": 1, "max_replicas": 4},
           "local": {"port_range": list(PORTS), "startup_timeout": "30s"}}
POLICY = f"""\
apiVersion: mape/v1
kind: Policy
metadata: {{name: retrain-canary}}
spec:
  when: "!('retrain' in since_last)"
  action:
    type: retrain
    params: {{window: 6h, min_train_rows: 100, canary: {{steps: [0.3, 0.5], bake: 1h}}}}
  verify: {{expect: "{EXPECT}", within: 3h}}
"""


@pytest.mark.slow
def test_ticks_start_widen_and_promote_a_canary(tmp_path: Path, clock):
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "retrain-canary.yaml").write_text(POLICY)
    settings = settings_from_mapping({
        "db_url": f"sqlite:///{tmp_path / 'mape.db'}", "policies_dir": str(policies), "tick_interval": "1h",
        "artifacts_dir": str(tmp_path / "artifacts"), "serving_dir": str(tmp_path / "serving"),
        "controller_id": "ctl", "models": [model_settings(tmp_path, serving=SERVING)]}, source="test", base=tmp_path)
    controller = Controller(settings, clock=clock)
    t0 = clock()
    world = make_world(controller.engine, tmp_path, t0, serving=SERVING)
    production = LocalReplicaSet("ranker", tmp_path / "serving",
                                 production_artifact(controller.engine, world.model_id, "ranker"), port_range=PORTS)
    canary = LocalReplicaSet("ranker", tmp_path / "serving", lambda: (0, ""), port_range=PORTS, track="canary")
    try:
        production.scale(2)
        first = controller.tick(t0)
        (action,) = first.actions
        assert (action.action, action.state, action.result["canary"]["state"]) == ("retrain", "succeeded", "running")
        assert [r.version for r in canary.members()] == [2]

        for hour, move in ((1, "widened"), (2, "promoted")):
            frame = world.requests(600, t0 + (hour - 1) * HOUR)
            replicas = [(e, r.version) for s in (production, canary) for e, r in zip(s.health().endpoints,
                                                                                        s.members())]
            for index, (endpoint, version) in enumerate(replicas):
                part = frame.iloc[index::len(replicas)]
                world.log(part, predict(endpoint, part), version)
            report = controller.tick(t0 + hour * HOUR)
            assert not [e for e in report.errors if e.startswith(("canary", "verify", "plan"))], report.errors
            judged, moved = report.canaries
            assert judged.startswith(f"model ranker: canary step {hour} of 2") and judged.endswith(": pass")
            assert f"version 2 {move}" in moved
            # the policy fired once (its condition says so); the canary carried the change on its own
            assert [d.status for d in report.decisions] == []

        assert canary.replicas() == 0 and [r.version for r in production.members()] == [2, 2]
        with session_scope(controller.engine) as session:
            assert registry.production_version(session, world.model_id).version == 2
        # a repeated tick changes nothing
        assert controller.tick(t0 + 2 * HOUR).canaries == []
    finally:
        canary.stop_all()
        production.stop_all()
        controller.engine.dispose()
