"""The tick report names what is pending and what lapsed, besides the decisions: `mape tick` prints it."""

from __future__ import annotations

from pathlib import Path

from tests.controller.world import make_world

WAITING = """\
apiVersion: mape/v1
kind: Policy
metadata: {name: waiting-retrain}
spec:
  when: "has(drift.share_drifted)"
  for: 2h
  action: {type: retrain}
  mode: dry-run
"""


def test_the_report_lists_policies_waiting_out_their_for(tmp_path: Path):
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "waiting.yaml").write_text(WAITING)
    world = make_world(tmp_path / "world", policies)
    world.serve_hour(1)
    first = world.controller.tick(world.scenario.at(1))
    assert first.pending == {"credit-risk": ["waiting-retrain"]}
    assert first.decisions == [] and first.expired == [] and first.cancelled == []
    assert "pending" in first.model_dump(mode="json")
