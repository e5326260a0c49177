"""A malformed policy file is refused with its file and field named; the controller keeps running on the rest."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlmodel import select

from knowledge.database import session_scope
from knowledge.tables import AuditEvent, Decision, PolicyVersion
from tests.controller.world import make_world

REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"

ALWAYS_RETRAIN = """\
apiVersion: mape/v1
kind: Policy
metadata: {name: always-retrain, owner: test@example.com}
spec:
  when: "has(drift.share_drifted)"
  action: {type: retrain, params: {window: 6h}}
  cooldown: 0s
  mode: dry-run
"""

BROKEN_FIELD = """\
apiVersion: mape/v1
kind: Policy
metadata: {name: broken}
spec:
  when: "true"
  action: {type: retrain}
  mode: sometimes
"""


def test_bad_file_is_refused_and_the_others_keep_working(tmp_path: Path):
    policies = tmp_path / "policies"
    shutil.copytree(REPO_POLICIES, policies, ignore=shutil.ignore_patterns("*.md", "*.json"))
    (policies / "always-retrain.yaml").write_text(ALWAYS_RETRAIN)
    (policies / "broken.yaml").write_text(BROKEN_FIELD)
    (policies / "not-yaml.yaml").write_text("spec: [unclosed\n")

    world = make_world(tmp_path / "world", policies)
    controller = world.controller
    names = sorted(p.name for p in controller.policies)
    assert names == ["always-retrain", "fairness-guard", "retrain-on-concept-drift", "retrain-on-drift",
                     "retrain-when-carbon-is-low",
                     "rollback-on-regression", "scale-down-when-gpu-idle", "scale-up-on-gpu-load"]
    errors = "\n".join(controller.policy_errors)
    assert "broken.yaml" in errors and "spec.mode" in errors
    assert "not-yaml.yaml" in errors

    world.serve_hour(1)
    report = controller.tick(world.scenario.at(1))
    assert not [e for e in report.errors if e.startswith("plan")]
    with session_scope(controller.engine) as session:
        decisions = session.exec(select(Decision)).all()
        refused = session.exec(select(AuditEvent).where(AuditEvent.kind == "policy.refused")).all()
    assert [d.policy_name for d in decisions] == ["always-retrain"]
    assert decisions[0].status == "dry_run"
    assert {Path(e.subject).name for e in refused} == {"broken.yaml", "not-yaml.yaml"}


def test_a_file_that_turns_bad_keeps_its_last_good_version_in_force(tmp_path: Path):
    policies = tmp_path / "policies"
    policies.mkdir()
    good = policies / "always-retrain.yaml"
    good.write_text(ALWAYS_RETRAIN)
    world = make_world(tmp_path / "world", policies)
    controller = world.controller
    first_sha = controller.policies[0].sha256

    good.write_text(ALWAYS_RETRAIN.replace("has(drift.share_drifted)", "drift.share_drifted >"))
    assert controller.reload_policies() is True
    assert [p.sha256 for p in controller.policies] == [first_sha]
    assert "always-retrain.yaml" in controller.policy_errors[0] and "spec.when" in controller.policy_errors[0]
    assert "keeping the last good version" in controller.policy_errors[0]

    world.serve_hour(1)
    controller.tick(world.scenario.at(1))
    with session_scope(controller.engine) as session:
        decision = session.exec(select(Decision)).one()
        assert decision.policy_sha256 == first_sha
        assert session.exec(select(PolicyVersion)).all()[0].sha256 == first_sha
