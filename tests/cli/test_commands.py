"""The ``mape`` CLI: clear errors for bad input, and the commands people use headless."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mape.cli import app

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_policy_validate_passes_the_shipped_library_and_names_file_and_field_of_a_bad_one(tmp_path: Path):
    ok = runner.invoke(app, ["policy", "validate", str(REPO / "policies")])
    assert ok.exit_code == 0, ok.output
    assert "retrain-on-drift" in ok.output and "0 invalid" in ok.output

    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: mape/v1\nkind: Policy\nmetadata: {name: bad}\n"
                   "spec: {when: 'drift.share_drifted > 0.3', action: {type: retrian}}\n")
    result = runner.invoke(app, ["policy", "validate", str(bad)])
    assert result.exit_code == 1
    assert "bad.yaml" in result.output and "spec.action.type" in result.output and "retrian" in result.output


def test_a_bad_configuration_exits_2_naming_the_file_and_the_field(tmp_path: Path):
    config = tmp_path / "mape.yaml"
    config.write_text(yaml.safe_dump({"tick_interval": "soon", "models": []}))
    result = runner.invoke(app, ["config", "--config", str(config)])
    assert result.exit_code == 2
    assert str(config) in result.output and "tick_interval" in result.output and "soon" in result.output

    config.write_text(yaml.safe_dump({"models": [{"name": "m", "features": {}, "training": {"entrypoint": "nocolon"},
                                                  "inference": {"kind": "parquet", "path": "x"},
                                                  "labels_source": {"kind": "parquet", "path": "y"}}]}))
    result = runner.invoke(app, ["config", "--config", str(config)])
    assert result.exit_code == 2
    assert "models[0].training.entrypoint" in result.output


def test_db_upgrade_then_current(tmp_path: Path):
    config = tmp_path / "mape.yaml"
    config.write_text(yaml.safe_dump({"db_url": "sqlite:///kb.db"}))
    up = runner.invoke(app, ["db", "upgrade", "--config", str(config)])
    assert up.exit_code == 0, up.output
    assert (tmp_path / "kb.db").exists()  # relative to the config file, not the working directory
    current = runner.invoke(app, ["db", "current", "--config", str(config)])
    assert "up to date" in current.output


@pytest.mark.slow
def test_tick_runs_one_flow_run_and_prints_its_report(tmp_path: Path, prefect_server: None):
    config = tmp_path / "mape.yaml"
    config.write_text(yaml.safe_dump({"db_url": "sqlite:///kb.db", "policies_dir": str(REPO / "policies")}))
    result = runner.invoke(app, ["tick", "--config", str(config), "--at", "2026-03-02T10:00:00"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["at"].startswith("2026-03-02T10:00:00") and report["repeated"] is False
    again = json.loads(runner.invoke(app, ["tick", "--config", str(config), "--at", "2026-03-02T10:00:00"]).stdout)
    assert again["repeated"] is True


def _admins(config: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """alice and bob as admins of the demo configuration's users file; commands sign in as alice unless told."""
    from mape.access import Role, UsersFile

    users = UsersFile(config.parent / "users.yaml")
    for name in ("alice", "bob"):
        users.add(name, Role.admin, "a password for tests")
    monkeypatch.setenv("MAPE_USER", "alice")
    monkeypatch.setenv("MAPE_PASSWORD", "a password for tests")


def test_models_list_shows_stages_and_gate_numbers_and_actions_request_records_an_approved_decision(tmp_path: Path,
                                                                                                   monkeypatch):
    from sqlmodel import select

    from examples.credit.demo import write_config
    from knowledge import registry
    from knowledge.database import create_engine_for, session_scope
    from knowledge.migrate import upgrade
    from knowledge.tables import AuditEvent, Decision

    config = write_config(tmp_path, REPO / "policies")
    _admins(config, monkeypatch)
    url = f"sqlite:///{tmp_path / 'mape.db'}"
    upgrade(url)
    engine = create_engine_for(url)
    with session_scope(engine) as session:
        model = registry.upsert_model(session, name="credit-risk")
        v1 = registry.register_version(session, model_id=model.id, artifact_uri="file:///v1", metrics={"accuracy": 0.9})
        registry.promote(session, v1, actor="test")
        v2 = registry.register_version(session, model_id=model.id, artifact_uri="file:///v2")
        registry.reject(session, v2, actor="test", reason="worse", evaluation={
            "metric": "accuracy", "candidate": {"accuracy": 0.5}, "champion": {"accuracy": 0.9},
            "champion_version": 1, "n": 800})

    listed = runner.invoke(app, ["models", "list", "--config", str(config)])
    assert listed.exit_code == 0, listed.output
    assert "v1 production accuracy 0.900" in listed.output
    assert "v2 rejected (gate: 0.500 vs production v1 0.900 on 800 rows)" in listed.output

    unknown = runner.invoke(app, ["actions", "request", "nope", "retrain", "--reason", "x", "--config", str(config)])
    assert unknown.exit_code == 2 and "no managed model named 'nope'" in unknown.output
    asked = runner.invoke(app, ["actions", "request", "credit-risk", "retrain", "--reason", "fresh data",
                                "--user", "alice", "--param", "window=6h", "--config", str(config)])
    assert asked.exit_code == 0, asked.output
    with session_scope(engine) as session:
        decision = session.exec(select(Decision)).one()
        assert (decision.status, decision.decided_by, decision.params) == ("approved", "alice", {"window": "6h"})
        assert session.exec(select(AuditEvent).where(AuditEvent.kind == "decision.requested")).one().actor == "alice"

    lone = runner.invoke(app, ["actions", "request", "credit-risk", "retrain", "--reason", "r", "--user", "alice",
                               "--approval-timeout", "1h", "--config", str(config)])
    assert lone.exit_code == 2 and "add --needs-approval" in lone.output
    gated = runner.invoke(app, ["actions", "request", "credit-risk", "retrain", "--reason", "quarter end",
                                "--user", "alice", "--needs-approval", "--approval-timeout", "1d",
                                "--config", str(config)])
    assert gated.exit_code == 0 and "it waits for an approver" in gated.output, gated.output
    with session_scope(engine) as session:
        waiting = session.exec(select(Decision).where(Decision.status == "awaiting_approval")).one()
        assert waiting.decided_by is None and waiting.expires_at is not None
        assert waiting.expires_at - waiting.created_at == timedelta(days=1)


def test_models_references_lists_each_stored_reference_newest_first(tmp_path: Path):
    from datetime import datetime, timezone

    from examples.credit.demo import write_config
    from knowledge import registry
    from knowledge.database import create_engine_for, session_scope
    from knowledge.migrate import upgrade
    from knowledge.references import add_reference

    config = write_config(tmp_path, REPO / "policies")
    url = f"sqlite:///{tmp_path / 'mape.db'}"
    upgrade(url)
    engine = create_engine_for(url)
    t0 = datetime(2026, 3, 2, tzinfo=timezone.utc)
    with session_scope(engine) as session:
        model = registry.upsert_model(session, name="credit-risk")
        v1 = registry.register_version(session, model_id=model.id, artifact_uri="file:///v1")
        registry.promote(session, v1, actor="test")
    empty = runner.invoke(app, ["models", "references", "credit-risk", "--config", str(config)])
    assert empty.exit_code == 0 and "no reference stored yet" in empty.output
    with session_scope(engine) as session:
        add_reference(session, model_id=model.id, model_version_id=v1.id, kind="fixed", taken_at=t0,
                      window_start=t0, window_end=t0, n_rows=480, fingerprint="f" * 64, reason="the training window")
        add_reference(session, model_id=model.id, model_version_id=v1.id, kind="reservoir", taken_at=t0,
                      window_start=t0, window_end=t0, n_rows=300, fingerprint="e" * 64, reason="reservoir",
                      sample=b"PAR1")
    listed = runner.invoke(app, ["models", "references", "credit-risk", "--config", str(config)])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.strip().splitlines()
    assert lines[0].startswith("reference 2 (reservoir) of v1") and "300 rows" in lines[0] and "sample stored" in lines[0]
    assert lines[1].startswith("reference 1 (fixed) of v1") and "the training window" in lines[1]
    unknown = runner.invoke(app, ["models", "references", "nope", "--config", str(config)])
    assert unknown.exit_code == 2 and "no managed model named 'nope'" in unknown.output


def test_models_show_promote_and_rollback_for_people(tmp_path: Path, monkeypatch):
    from datetime import datetime, timezone

    from sqlmodel import select

    from examples.credit.demo import write_config
    from knowledge import registry
    from knowledge.database import create_engine_for, session_scope
    from knowledge.migrate import upgrade
    from knowledge.tables import ActionRun, AuditEvent, Decision

    config = write_config(tmp_path, REPO / "policies")
    _admins(config, monkeypatch)
    url = f"sqlite:///{tmp_path / 'mape.db'}"
    upgrade(url)
    engine = create_engine_for(url)
    t0 = datetime(2026, 3, 2, tzinfo=timezone.utc)
    with session_scope(engine) as session:
        model = registry.upsert_model(session, name="credit-risk")
        v1 = registry.register_version(session, model_id=model.id, artifact_uri="file:///v1", metrics={"accuracy": 0.9},
                                       training_window=(t0, t0))
        registry.promote(session, v1, actor="test", at=t0)
        decision = Decision(model_id=model.id, policy_name="retrain-on-drift", action="retrain", status="proposed",
                            dedup_key="k1")
        session.add(decision)
        session.flush()
        run = ActionRun(decision_id=decision.id, model_id=model.id, action="retrain", state="succeeded",
                        verdict="fail", idempotency_key=f"decision-{decision.id}")
        session.add(run)
        session.flush()
        v2 = registry.register_version(session, model_id=model.id, artifact_uri="file:///v2",
                                       created_by_action_run_id=run.id)
        registry.promote(session, v2, actor="engine", evaluation={"reason": "candidate accuracy 0.93 vs 0.90"})
        v3 = registry.register_version(session, model_id=model.id, artifact_uri="file:///v3")
        run_id, decision_id = run.id, decision.id

    shown = runner.invoke(app, ["models", "show", "credit-risk", "--json", "--config", str(config)])
    assert shown.exit_code == 0, shown.output
    record = json.loads(shown.stdout)
    v2_record = record["versions"][1]
    assert v2_record["produced_by"] == {"action_run": run_id, "decision": decision_id, "action": "retrain",
                                        "state": "succeeded", "verdict": "fail", "flow_run_id": None}
    assert v2_record["parent_version"] == 1 and v2_record["evaluation"]["reason"].startswith("candidate accuracy")
    text = runner.invoke(app, ["models", "show", "credit-risk", "--config", str(config)]).output
    assert "v2 production: file:///v2" in text and f"made by action run {run_id} (retrain" in text

    # v3 by hand: v2 (whose verification failed) is archived, so it is not a rollback target; v1 is
    promoted = runner.invoke(app, ["models", "promote", "credit-risk", "3", "--reason", "hotfix", "--user", "alice",
                                   "--config", str(config)])
    assert promoted.exit_code == 0, promoted.output
    with session_scope(engine) as session:
        assert registry.production_version(session, model.id).version == 3
        assert registry.rollback_target(session, model.id).version == 1
        assert session.exec(select(AuditEvent).where(AuditEvent.actor == "alice")).first() is not None
    again = runner.invoke(app, ["models", "promote", "credit-risk", "3", "--reason", "x", "--config", str(config)])
    assert again.exit_code == 2 and "already in production" in again.output
    missing = runner.invoke(app, ["models", "promote", "credit-risk", "9", "--reason", "x", "--config", str(config)])
    assert missing.exit_code == 2 and "has no version 9" in missing.output

    rolled = runner.invoke(app, ["models", "rollback", "credit-risk", "--reason", "bad canary", "--user", "bob",
                                 "--config", str(config)])
    assert rolled.exit_code == 0, rolled.output
    assert "rollback of credit-risk to version 1 approved by bob" in rolled.output
    with session_scope(engine) as session:
        asked = session.exec(select(Decision).where(Decision.action == "rollback")).one()
        assert (asked.status, asked.decided_by) == ("approved", "bob")
