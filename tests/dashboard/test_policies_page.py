"""The Policies page: the live set with modes and refused files, firings, version diffs, dry runs; admins change modes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml
from sqlalchemy import func
from sqlmodel import select

from knowledge.database import create_engine_for, session_scope
from knowledge.tables import AuditEvent, Decision, ManagedModel, Pause, PolicyModeOverride, PolicyVersion, Tick
from mape.access import Role, UsersFile
from tests.dashboard.app_harness import PASSWORD, knowledge_base, open_app, open_page, sign_in

POLICY = """apiVersion: mape/v1
kind: Policy
metadata:
  name: retrain-on-drift
  owner: risk@example.com
spec:
  when: "true"
  action:
    type: retrain
    params: {window: 7d}
  cooldown: 0s
"""
#: Refused by the loader: an action type no one registered.
BROKEN = POLICY.replace("retrain-on-drift", "broken").replace("type: retrain", "type: retrian")
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def _kb(tmp_path: Path) -> Path:
    """The harness's knowledge base, a policy directory with one good and one refused file, ticks and versions."""
    config = knowledge_base(tmp_path)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "retrain-on-drift.yaml").write_text(POLICY)
    (policies / "broken.yaml").write_text(BROKEN)
    settings = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**settings, "policies_dir": "policies"}))
    engine = create_engine_for(f"sqlite:///{tmp_path / 'mape.db'}")
    with session_scope(engine) as session:
        model = session.exec(select(ManagedModel)).one()
        for hours in (3, 2, 1):
            at = NOW - timedelta(hours=hours)
            session.add(Tick(at=at, status="finished", finished_at=at))
            session.add(Decision(created_at=at, tick_at=at, model_id=model.id, policy_name="retrain-on-drift",
                                 action="retrain", status="proposed" if hours == 3 else "suppressed",
                                 dedup_key=f"{at.isoformat()}/credit-risk/retrain-on-drift"))
        older = POLICY.replace("cooldown: 0s", "cooldown: 6h")
        session.add(PolicyVersion(name="retrain-on-drift", sha256="a" * 64, text=older, source="policies/x.yaml",
                                  loaded_at=NOW - timedelta(days=2)))
        session.add(PolicyVersion(name="retrain-on-drift", sha256="b" * 64, text=POLICY, source="policies/x.yaml",
                                  loaded_at=NOW - timedelta(days=1)))
    engine.dispose()
    return config


def _policies(tmp_path: Path, monkeypatch, who: str):  # type: ignore[no-untyped-def]
    return open_page(sign_in(open_app(_kb(tmp_path), monkeypatch), who), "Policies")


def _rows(tmp_path: Path, table: type) -> list:  # type: ignore[type-arg]
    engine = create_engine_for(f"sqlite:///{tmp_path / 'mape.db'}")
    try:
        with session_scope(engine) as session:
            rows = list(session.exec(select(table)))
            session.expunge_all()
            return rows
    finally:
        engine.dispose()


def _counts(tmp_path: Path) -> tuple[int, ...]:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'mape.db'}")
    try:
        with session_scope(engine) as session:
            return tuple(session.exec(select(func.count()).select_from(t)).one()
                         for t in (Decision, AuditEvent, PolicyVersion, Tick, PolicyModeOverride))
    finally:
        engine.dispose()


def _button(app, label: str):  # type: ignore[no-untyped-def]
    return next(b for b in app.button if b.label == label)


def test_the_list_shows_each_policy_its_mode_owner_and_firings_and_every_refused_file(tmp_path: Path, monkeypatch):
    app = _policies(tmp_path, monkeypatch, "vic")
    (refused,) = app.error
    assert "broken.yaml" in refused.value and "spec.action.type" in refused.value and "retrian" in refused.value
    overview = app.dataframe[0].value
    row = overview[overview["policy"] == "retrain-on-drift"].iloc[0]
    assert (row["mode"], row["owner"], row["status"], row["decisions"], row["versions"]) == (
        "enforce", "risk@example.com", "valid", 3, 2)
    assert app.header[0].value == "Policy retrain-on-drift"
    text = " ".join(m.value for m in app.markdown)
    assert "Mode **enforce**, as the file says." in text and "3 decisions in the last 14 days" in text
    assert app.query_params["policy"] == ["retrain-on-drift"] or app.query_params["policy"] == "retrain-on-drift"


def test_the_diff_between_two_recorded_versions_is_shown(tmp_path: Path, monkeypatch):
    app = _policies(tmp_path, monkeypatch, "vic")
    diff = next(c.value for c in app.code if c.language == "diff")
    assert f"--- retrain-on-drift {'a' * 12}" in diff and f"+++ retrain-on-drift {'b' * 12}" in diff
    assert "-  cooldown: 6h" in diff and "+  cooldown: 0s" in diff
    app.selectbox(key="diff-from-retrain-on-drift").set_value(app.selectbox(key="diff-to-retrain-on-drift").value)
    app.run()
    assert next(c.value for c in app.code if c.language == "diff") == "(the same text)"


def test_a_viewer_dry_runs_an_edited_policy_and_nothing_is_written(tmp_path: Path, monkeypatch):
    app = _policies(tmp_path, monkeypatch, "vic")
    before = _counts(tmp_path)
    app.text_area(key="dry-run-text-retrain-on-drift").input(POLICY + "  mode: dry-run\n")
    app.number_input(key="dry-run-days-retrain-on-drift").set_value(1)
    _button(app, "Simulate last N days (at most 30)").click()
    app.run()
    assert not app.exception, app.exception
    done = app.success[0].value
    assert "Dry run of retrain-on-drift (in place of the live one): 3 ticks of 1 model replayed" in done
    assert "it would have made 0 acting decisions (live: 1)" in done
    outcomes = next(d.value for d in app.dataframe if "simulated" in d.value.columns)
    assert [tuple(r) for r in outcomes[["status", "simulated", "live"]].itertuples(index=False)] == [
        ("dry_run", 3, 0), ("proposed", 0, 1), ("suppressed", 0, 2)]
    summary = next(c.value for c in app.code if c.language == "text")
    assert summary.startswith("replayed 3 ticks from ")
    assert _counts(tmp_path) == before
    assert (tmp_path / "policies" / "retrain-on-drift.yaml").read_text() == POLICY


def test_an_invalid_edit_names_the_field_and_simulates_nothing(tmp_path: Path, monkeypatch):
    app = _policies(tmp_path, monkeypatch, "vic")
    app.text_area(key="dry-run-text-retrain-on-drift").input(POLICY.replace("cooldown: 0s", "cooldown: soon"))
    _button(app, "Simulate last N days (at most 30)").click()
    app.run()
    message = app.error[-1].value
    assert "nothing was simulated" in message and "spec.cooldown" in message and "(edited)" in message
    assert not app.success


def test_a_viewer_sees_the_modes_but_no_controls(tmp_path: Path, monkeypatch):
    app = _policies(tmp_path, monkeypatch, "vic")
    assert not [b for b in app.button if b.label in ("Apply mode", "Pause policy", "Resume policy")]
    assert any("signed in as a viewer" in c.value for c in app.caption)


def test_an_admin_sets_a_mode_with_a_reason_and_it_is_stored_and_audited(tmp_path: Path, monkeypatch):
    app = _policies(tmp_path, monkeypatch, "ada")
    app.selectbox(key="mode-retrain-on-drift").set_value("off")
    _button(app, "Apply mode").click()
    app.run()
    assert "'reason' parameter of set_policy_mode must be a reason" in app.error[0].value  # the flash, on top
    assert _rows(tmp_path, PolicyModeOverride) == []
    app.text_input(key="mode-reason-retrain-on-drift").input("incident 42: labels are late")
    _button(app, "Apply mode").click()
    app.run()
    assert "policy retrain-on-drift set to off by ada" in app.success[0].value
    (row,) = _rows(tmp_path, PolicyModeOverride)
    assert (row.policy_name, row.mode, row.set_by, row.reason) == ("retrain-on-drift", "off", "ada",
                                                                   "incident 42: labels are late")
    (event,) = [e for e in _rows(tmp_path, AuditEvent) if e.kind == "policy.mode_changed"]
    assert (event.actor, event.subject, event.payload["mode"], event.payload["role"]) == (
        "ada", "policy retrain-on-drift", "off", "admin")
    overview = app.dataframe[0].value
    assert overview[overview["policy"] == "retrain-on-drift"].iloc[0]["mode"] == "off (override)"
    assert any("Mode **off**: set by ada" in m.value for m in app.markdown)


def test_an_admin_pauses_and_resumes_the_policy(tmp_path: Path, monkeypatch):
    app = _policies(tmp_path, monkeypatch, "ada")
    app.text_input(key="pause-reason-retrain-on-drift").input("migrating the feature store")
    _button(app, "Pause policy").click()
    app.run()
    assert "policy retrain-on-drift paused by ada" in app.success[0].value
    assert [(p.scope, p.name) for p in _rows(tmp_path, Pause)] == [("policy", "retrain-on-drift")]
    _button(app, "Resume policy").click()
    app.run()
    assert app.success[0].value == "policy retrain-on-drift resumed by ada"
    assert _rows(tmp_path, Pause) == []
    kinds = [e.kind for e in _rows(tmp_path, AuditEvent) if e.kind.startswith("policy.")]
    assert kinds == ["policy.paused", "policy.resumed"]


def test_an_admin_demoted_since_the_page_was_drawn_is_refused(tmp_path: Path, monkeypatch):
    app = _policies(tmp_path, monkeypatch, "ada")
    UsersFile(tmp_path / "users.yaml").add("ada", Role.viewer, PASSWORD)
    app.text_input(key="mode-reason-retrain-on-drift").input("too late")
    app.selectbox(key="mode-retrain-on-drift").set_value("dry-run")
    _button(app, "Apply mode").click()
    app.run()
    assert "ada (viewer) may not change the mode of policy retrain-on-drift" in app.error[0].value
    assert _rows(tmp_path, PolicyModeOverride) == []


def test_an_empty_policy_directory_and_knowledge_base_say_what_is_missing(tmp_path: Path, monkeypatch):
    config = knowledge_base(tmp_path)
    settings = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**settings, "policies_dir": "nowhere"}))
    app = open_page(sign_in(open_app(config, monkeypatch), "vic"), "Policies")
    assert "nowhere" in app.error[0].value and "not a directory of policies" in app.error[0].value
    assert "No policy is live or recorded" in app.info[0].value
