"""``mape policy test``, ``mape policy explain`` and ``mape policy schema``."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml
from typer.testing import CliRunner

from mape.cli import app
from mape.plan.policy import policy_json_schema

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_policy_test_passes_the_shipped_tests_and_fails_a_wrong_expectation_with_a_diff(tmp_path: Path):
    ok = runner.invoke(app, ["policy", "test", str(REPO / "policies")])
    assert ok.exit_code == 0, ok.output
    shipped = sum(len(yaml.safe_load(p.read_text())["tests"]) for p in (REPO / "policies").glob("*.test.yaml"))
    assert ok.output.count("PASS  ") == shipped and f"{shipped} passed, 0 failed" in ok.output

    wrong = tmp_path / "wrong.test.yaml"
    wrong.write_text(yaml.safe_dump({
        "policies": [str(REPO / "policies" / "retrain-on-drift.yaml")],
        "tests": [{"name": "fresh drift retrains at once (it does not)", "ticks": [
            {"signals": {"performance.accuracy_drop": 0.05}, "symptoms": ["data_drift"],
             "expect": [{"policy": "retrain-on-drift", "status": "proposed"}]}]}],
    }))
    failed = runner.invoke(app, ["policy", "test", str(wrong), str(REPO / "policies" / "retrain-on-drift.test.yaml")])
    assert failed.exit_code == 1
    assert f"FAIL  {wrong}: fresh drift retrains at once (it does not)" in failed.output
    assert "- expected: retrain-on-drift (proposed)" in failed.output
    assert "+ got:      no decision" in failed.output
    assert "0 failed" not in failed.output and " passed, 1 failed" in failed.output


def test_policy_test_exits_1_on_an_invalid_test_file_naming_file_and_field(tmp_path: Path):
    bad = tmp_path / "bad.test.yaml"
    bad.write_text("policies: [nope.yaml]\ntests: [{name: t, ticks: [{expect: []}]}]\n")
    result = runner.invoke(app, ["policy", "test", str(bad)])
    assert result.exit_code == 1
    assert f"invalid: {bad}: policies[0]: cannot read policy file" in result.output


def test_policy_schema_prints_the_json_schema_of_the_policy_format():
    result = runner.invoke(app, ["policy", "schema"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == policy_json_schema()


def _seed_decision(tmp_path: Path) -> tuple[Path, int]:
    """A knowledge base next to mape.yaml with one decision, written by the real planner and the shipped policy."""
    from knowledge.database import create_engine_for, session_scope
    from knowledge.migrate import upgrade
    from mape.plan import Planner, load_policies
    from tests.plan.helpers import KNOWN_ACTIONS, add_model, observe, open_symptom

    config = tmp_path / "mape.yaml"
    config.write_text(yaml.safe_dump({"db_url": "sqlite:///kb.db"}))
    url = f"sqlite:///{tmp_path / 'kb.db'}"
    upgrade(url)
    engine = create_engine_for(url)
    began = datetime(2026, 1, 5, tzinfo=timezone.utc)
    at = began + timedelta(hours=3)
    policies = load_policies(REPO / "policies", known_actions=KNOWN_ACTIONS).policies
    try:
        with session_scope(engine) as session:
            model = add_model(session, "credit-risk")
            open_symptom(session, model, "data_drift", began)
            observe(session, model, at, drift__share_drifted=0.5, performance__accuracy_drop=0.05)
            [decision] = Planner(policies).plan(session, [model], at).decisions["credit-risk"]
    finally:
        engine.dispose()
    assert decision.id is not None
    return config, decision.id


def test_policy_explain_prints_why_and_json_and_exits_2_for_an_unknown_id(tmp_path: Path):
    config, decision_id = _seed_decision(tmp_path)
    result = runner.invoke(app, ["policy", "explain", str(decision_id), "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert f"decision {decision_id}: retrain-on-drift -> retrain on model credit-risk: proposed" in result.output
    assert "version sha256 " in result.output
    assert "true   symptoms.data_drift.age_seconds >= 7200" in result.output
    assert "symptoms.data_drift.age_seconds = 10800.0" in result.output
    assert "performance.accuracy_drop = 0.05" in result.output
    assert "action run: none (not dispatched yet" in result.output

    as_json = runner.invoke(app, ["policy", "explain", str(decision_id), "--config", str(config), "--json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert (data["decision_id"], data["policy"], data["status"], data["when_value"]) == (
        decision_id, "retrain-on-drift", "proposed", True)
    assert {e["path"]: e["value"] for e in data["evidence"]}["performance.accuracy_drop"] == 0.05
    assert "name: retrain-on-drift" in data["policy_text"]

    unknown = runner.invoke(app, ["policy", "explain", "999", "--config", str(config)])
    assert unknown.exit_code == 2
    assert "no decision 999" in unknown.output
