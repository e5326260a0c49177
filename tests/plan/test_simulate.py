"""``mape policy simulate``: a replay of the recorded ticks agrees with the live planner, and shows a policy change.

The history is recorded the way the controller records it: each tick writes
its observations and symptoms, the real :class:`~mape.plan.planner.Planner`
plans, and only then do actions, promotions and people act (at the tick's
time or a little later). Replaying that history with the same policies must
find no difference at all; with a changed set, exactly the expected ones.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import Engine
from sqlmodel import select
from typer.testing import CliRunner

from knowledge import queries, registry
from knowledge.database import create_engine_for, session_scope
from knowledge.migrate import upgrade
from knowledge.tables import ActionRun, Decision, ManagedModel, Observation, Symptom
from mape.cli import app
from mape.config import BlastRadius
from mape.plan import LoadedPolicy, Planner
from mape.plan.simulate import LEGEND, SimulationError, simulate
from tests.plan.helpers import add_model, make_policy, policy_text

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
MAX_AGE = timedelta(minutes=30)
TICKS = 22
runner = CliRunner()


def at(k: int) -> datetime:
    return T0 + k * HOUR


POLICY_SET_A = {
    # for + keep_firing_for: drift must last 2 h, and one calm hour does not end it
    "retrain-on-drift": dict(when="has(drift.share_drifted) && drift.share_drifted > 0.3", priority=50,
                             cooldown="3h", **{"for": "2h", "keep_firing_for": "1h"}),
    # a person must approve; unanswered requests lapse after 3 h
    "ask-on-drift": dict(when="'data_drift' in symptoms", priority=60, approval="required",
                         approval_timeout="3h", cooldown="1h"),
    # outranks the retrains of m1 while accuracy is down
    "rollback-m1-drop": dict(action="rollback", priority=70, cooldown="2h", selector={"models": ["m1"]},
                             when="has(performance.accuracy_drop) && performance.accuracy_drop > 0.05 "
                                  "&& model.can_roll_back"),
    "rollback-on-regression": dict(action="rollback", priority=90, cooldown="6h",
                                   when="'performance_drop' in symptoms && model.can_roll_back"),
    # no cooldown, but at most 2 a day, and never within 3 h of a rollback
    "retrain-capped": dict(when="has(performance.accuracy_drop) && performance.accuracy_drop > 0.05", priority=10,
                           cooldown="0s", rate_limit={"max": 2, "per": "1d"},
                           never_with=[{"action": "rollback", "within": "3h"}]),
    "watch-drift": dict(when="has(drift.share_drifted) && drift.share_drifted > 0.1", mode="dry-run"),
    # no has(): a missing signal is an evaluation error, never a reason to act
    "retrain-m3": dict(when="drift.share_drifted > 0.5", selector={"models": ["m3"]}, cooldown="2h"),
}


def policy_set(specs: dict[str, dict]) -> list[LoadedPolicy]:
    return [make_policy(name, **spec) for name, spec in specs.items()]


def signals(model: str, k: int) -> dict[str, float] | None:
    """The summary signals of each model at tick k (None: nothing measured, the old ones go stale)."""
    if model == "m1":
        return {"drift.share_drifted": 0.5 if 3 <= k < 16 and k != 9 else 0.05,
                "performance.accuracy_drop": 0.08 if 5 <= k < 14 else 0.0}
    if model == "m2":
        return {"drift.share_drifted": 0.2, "performance.accuracy_drop": 0.1 if 6 <= k < 12 else 0.01}
    if 11 <= k <= 12:
        return None
    return {"drift.share_drifted": 0.6 if k >= 8 else 0.1}


SYMPTOMS = {("m1", "data_drift"): (4, 16), ("m2", "performance_drop"): (6, 12), ("m3", "data_drift"): (13, None)}


@dataclass
class Recorded:
    """A recorded history: the knowledge base, its models in planning order, and what the live planner decided."""

    engine: Engine
    models: list[ManagedModel]
    decisions: list[Decision] = field(default_factory=list)

    def reasons(self) -> set[str]:
        return {(d.reason.split(":")[0] if d.reason else d.status) for d in self.decisions}


def record(engine: Engine, policies: Sequence[LoadedPolicy], *, blast_radius: BlastRadius | None = None,
           ticks: int = TICKS) -> Recorded:
    """Run the real planner over ``ticks`` hourly ticks of a three-model world, as the controller would."""
    planner = Planner(policies, actor="controller", max_age=MAX_AGE, blast_radius=blast_radius)
    with session_scope(engine) as session:
        models = [add_model(session, "m1", team="risk"), add_model(session, "m2", team="growth"),
                  add_model(session, "m3")]
        for model in models[:2]:
            for number in (1, 2):
                version = registry.register_version(session, model_id=model.id, artifact_uri=f"test://{number}",
                                                    metrics={"accuracy": 0.9})
                registry.promote(session, version, actor="setup", at=T0 - timedelta(days=3 - number))
    symptoms: dict[tuple[str, str], Symptom] = {}
    for k in range(ticks):
        t = at(k)
        with session_scope(engine) as session:
            queries.begin_tick(session, t, controller_id="controller")
            for model in models:
                measured = signals(model.name, k)
                if measured is not None:
                    queries.add_observations(session, [Observation(time=t, model_id=model.id, sensor="test",
                                                                   metric=name, value=value)
                                                       for name, value in measured.items()])
            for (name, kind), (opens, closes) in SYMPTOMS.items():
                model = next(m for m in models if m.name == name)
                if k == opens:
                    symptoms[(name, kind)] = Symptom(model_id=model.id, kind=kind, opened_at=t, last_seen_at=t)
                symptom = symptoms.get((name, kind))
                if symptom is None or symptom.closed_at is not None:
                    continue
                if closes is not None and k >= closes:
                    symptom.status, symptom.closed_at = "closed", t
                else:
                    symptom.last_seen_at = t
                session.add(symptom)
            if k == 13:  # verification (before planning): m3's retrain of tick 10 failed, retrain-m3 is blocked
                decision = session.exec(select(Decision).where(Decision.policy_name == "retrain-m3",
                                                               Decision.tick_at == at(10))).first()
                if decision is not None:
                    session.add(ActionRun(decision_id=decision.id, model_id=decision.model_id, action="retrain",
                                          state="succeeded", idempotency_key=f"mape-decision-{decision.id}",
                                          created_at=at(10), started_at=at(10), finished_at=at(10), updated_at=t,
                                          verdict="fail", verdict_at=t, verify_until=t))
            if k == 12:  # a verification's follow-up rollback, written before planning: it takes m1's slot
                run = session.exec(select(ActionRun).where(ActionRun.model_id == models[0].id)).first()
                session.add(Decision(created_at=t, tick_at=t, model_id=models[0].id, policy_name="retrain-on-drift",
                                     action="rollback", status="proposed", reason="verification failed",
                                     dedup_key=f"m1/retrain-on-drift/verification/{run.id}", follows_run_id=run.id))
            session.flush()
            report = planner.plan(session, models, t)
            _after_planning(session, models, k, t, report.all_decisions)
    with session_scope(engine) as session:
        decisions = list(session.exec(select(Decision).where(Decision.tick_at != None)  # noqa: E711
                                      .where(Decision.follows_run_id == None)  # noqa: E711
                                      .order_by(Decision.id)))
    return Recorded(engine, models, decisions)


def _after_planning(session, models: list[ManagedModel], k: int, t: datetime, decided: list[Decision]) -> None:
    """What happens in a tick after planning: actions run, versions change, people answer and pause."""
    m1, m2, _ = models
    if k == 5:  # a person asks for a retrain of m1; it runs until tick 7 (m1 is busy at ticks 6 and 7)
        request = Decision(created_at=t, tick_at=None, model_id=m1.id, policy_name="manual", action="retrain",
                           status="approved", reason="asked", actor="alice", decided_by="alice", decided_at=t,
                           dedup_key=f"m1/manual/alice/{t.isoformat()}/retrain")
        session.add(request)
        session.flush()
        session.add(ActionRun(decision_id=request.id, model_id=m1.id, action="retrain", state="running",
                              idempotency_key=f"mape-decision-{request.id}", created_at=t, started_at=t,
                              updated_at=t))
    if k == 7:
        run = session.exec(select(ActionRun).where(ActionRun.model_id == m1.id)).one()
        run.state, run.finished_at, run.updated_at = "succeeded", t, t
        session.add(run)
    for decision in decided:  # the first request for approval is approved half an hour later
        if decision.status == "awaiting_approval" and not getattr(_after_planning, "approved", False):
            decision.status, decision.decided_by, decision.decided_at = "approved", "alice", t + timedelta(minutes=30)
            session.add(decision)
            _after_planning.approved = True  # type: ignore[attr-defined]
    if k == 9:  # m2's rollback runs: version 1 is in production again, version 2 rejected
        registry.rollback(session, m2.id, actor="controller", reason="regression", at=t)
    if k == 10:  # m1's retrain made version 3
        version = registry.register_version(session, model_id=m1.id, artifact_uri="test://3", metrics={"accuracy": 0.93})
        registry.promote(session, version, actor="controller", at=t)
    if k == 14:
        queries.pause(session, "model", "m2", actor="alice", reason="incident 42", at=t + timedelta(minutes=10))
    if k == 16:
        queries.resume(session, "model", "m2", actor="alice", at=t + timedelta(minutes=10))


@pytest.fixture(autouse=True)
def _fresh_approval_flag():
    _after_planning.approved = False  # type: ignore[attr-defined]
    yield


def _simulate(recorded: Recorded, policies: Sequence[LoadedPolicy], **kwargs):
    return simulate(recorded.engine, policies, start=at(0), end=at(TICKS - 1), models=recorded.models,
                    max_age=MAX_AGE, **kwargs)


def test_replaying_with_the_live_policies_finds_no_difference(engine):
    policies = policy_set(POLICY_SET_A)
    recorded = record(engine, policies)
    # the history exercises every rule the replay must reproduce
    assert {"awaiting approval", "cooldown", "dry-run", "outranked", "rate limit", "excluded", "busy",
            "paused", "blocked", "proposed"} <= recorded.reasons()
    assert {d.status for d in recorded.decisions} >= {"approved", "expired", "suppressed", "dry_run", "proposed"}

    report = _simulate(recorded, policies)

    assert report.agrees, "\n".join(report.lines(only_diff=True))
    assert report.summary.ticks == TICKS and report.summary.models == 3
    live = [(d.tick_at, d.policy_name, d.status) for d in recorded.decisions]
    assert sum(report.summary.live_statuses.values()) == len(live)
    assert report.summary.simulated_statuses == report.summary.live_statuses
    assert report.summary.first_divergence is None
    # the live decisions that people or time answered later are compared as they were made
    assert report.summary.live_statuses["awaiting_approval"] >= 2
    assert report.summary.missing_signals > 0  # m3 at ticks 11 and 12


def test_a_simulated_reason_reads_like_the_live_one(engine):
    policies = policy_set(POLICY_SET_A)
    recorded = record(engine, policies)
    report = _simulate(recorded, policies)
    pairs = [(lv, sim) for tick in report.ticks for marker, lv, sim in tick.rows() if marker == "="]
    assert pairs
    for live, sim in pairs:
        # ids differ (s12 for a simulated decision; the live planner names a winner of the same tick "None"
        # in an exclusion): the rest of the reason is the same
        assert _without_ids(live.reason) == _without_ids(sim.reason), (live, sim)


def _without_ids(reason: str) -> str:
    return " ".join(w for w in reason.split() if not (w.rstrip(",)").lstrip("s").isdigit() or w == "None"))


def test_missing_signals_never_fire(engine):
    policies = policy_set(POLICY_SET_A)
    recorded = record(engine, policies)
    report = _simulate(recorded, policies)
    by_tick = {tick.at: tick for tick in report.ticks}
    for k in (11, 12):  # m3 measured nothing: drift.share_drifted is absent, retrain-m3 does not fire
        assert not [o for o in by_tick[at(k)].simulated if o.model == "m3" and o.policy == "retrain-m3"]
        # (retrain-on-drift guards with has(): false, not an error, so keep_firing_for keeps it at tick 11)
    assert [o.status for o in by_tick[at(10)].simulated if o.policy == "retrain-m3"] == ["proposed"]


def test_a_changed_policy_set_shows_the_expected_differences(engine):
    recorded = record(engine, policy_set(POLICY_SET_A))
    changed = dict(POLICY_SET_A)
    del changed["watch-drift"]  # removed
    changed["retrain-on-drift"] = {**changed["retrain-on-drift"], "when": "has(drift.share_drifted) && "
                                                                          "drift.share_drifted > 0.65"}  # stricter

    report = _simulate(recorded, policy_set(changed))

    live_watch = [d for d in recorded.decisions if d.policy_name == "watch-drift"]
    live_retrain = [d for d in recorded.decisions if d.policy_name == "retrain-on-drift"]
    assert live_watch and live_retrain
    live_only = {(o.model, o.policy) for tick in report.ticks for o in tick.live_only}
    assert ("m1", "watch-drift") in live_only and ("m2", "watch-drift") in live_only
    assert ("m1", "retrain-on-drift") in live_only
    assert report.summary.live_statuses["dry_run"] == len([d for d in live_watch if d.status == "dry_run"])
    assert report.summary.simulated_statuses["dry_run"] == 0
    assert not [o for tick in report.ticks for o in tick.simulated if o.policy in ("watch-drift", "retrain-on-drift")]
    # every live decision of the removed and the stricter policy is reported, and nothing else is missing
    assert report.summary.live_only == len(live_watch) + len(live_retrain)
    assert report.summary.first_divergence is not None
    first = min(d.tick_at for d in live_watch + live_retrain)
    assert report.summary.first_divergence["at"] == first.isoformat()
    assert not report.agrees


def test_a_changed_threshold_changes_statuses_through_the_cooldown(engine):
    recorded = record(engine, policy_set(POLICY_SET_A))
    changed = dict(POLICY_SET_A)
    changed["rollback-on-regression"] = {**changed["rollback-on-regression"], "cooldown": "1h"}
    report = _simulate(recorded, policy_set(changed))
    changes = [(tick.at, lv.status, sim.status) for tick in report.ticks for lv, sim in tick.changed
               if sim.policy == "rollback-on-regression"]
    # live: proposed at tick 6, then cooldown; with a 1h cooldown it acts again at tick 7
    assert (at(7), "suppressed", "proposed") in changes


def test_the_blast_radius_is_replayed_fleet_wide(engine):
    policies = policy_set(POLICY_SET_A)
    blast = BlastRadius(max_models=1, per=timedelta(hours=2))
    recorded = record(engine, policies, blast_radius=blast)
    assert "blast radius" in recorded.reasons()
    report = _simulate(recorded, policies, blast_radius=blast, workers=4)
    assert report.summary.workers == 1  # the blast radius counts models fleet-wide
    assert report.agrees, "\n".join(report.lines(only_diff=True))


def test_parallel_replay_decides_as_one_process(engine):
    policies = policy_set(POLICY_SET_A)
    recorded = record(engine, policies)
    one = _simulate(recorded, policies, workers=1)
    two = _simulate(recorded, policies, workers=2)
    assert two.summary.workers == 2
    assert two.agrees
    assert [[(o.model, o.policy, o.status) for o in t.simulated] for t in two.ticks] == \
        [[(o.model, o.policy, o.status) for o in t.simulated] for t in one.ticks]


def test_alternatives_are_chosen_as_live(engine):
    # roll m2 back while there is a version to return to, else retrain: the chosen action changes at tick 10
    specs = {**POLICY_SET_A, "fix-m2": dict(
        when="has(performance.accuracy_drop) && performance.accuracy_drop > 0.05", selector={"models": ["m2"]},
        priority=95, cooldown="2h", effects={"accuracy": 0.03},
        alternatives=[{"action": {"type": "rollback"}, "effects": {"accuracy": 0.05}, "when": "model.can_roll_back"}])}
    policies = policy_set(specs)
    recorded = record(engine, policies)
    assert {d.action for d in recorded.decisions if d.policy_name == "fix-m2"} == {"rollback", "retrain"}
    report = _simulate(recorded, policies)
    assert report.agrees, "\n".join(report.lines(only_diff=True))
    assert {o.action for t in report.ticks for o in t.simulated if o.policy == "fix-m2"} == {"rollback", "retrain"}


def test_for_counts_ticks_before_the_range_as_warm_up(engine):
    policies = policy_set(POLICY_SET_A)
    recorded = record(engine, policies)
    # from tick 5 on: retrain-on-drift's condition has held since tick 3, so it fires at once, as it did live
    report = simulate(recorded.engine, policies, start=at(5), end=at(TICKS - 1), models=recorded.models,
                      max_age=MAX_AGE)
    assert report.summary.warmup_ticks == 3  # for + keep_firing_for: 3 h
    assert report.agrees, "\n".join(report.lines(only_diff=True))
    cold = simulate(recorded.engine, policies, start=at(5), end=at(TICKS - 1), models=recorded.models,
                    max_age=MAX_AGE, warmup=False)
    assert not cold.agrees


def test_an_empty_range_or_knowledge_base_is_a_clear_error(engine):
    policies = policy_set(POLICY_SET_A)
    with pytest.raises(SimulationError, match="no recorded ticks: nothing to replay"):
        simulate(engine, policies, start=at(0), end=at(3))
    record(engine, policies, ticks=2)
    with pytest.raises(SimulationError, match=r"no recorded ticks between .* the knowledge base has 2 from"):
        simulate(engine, policies, start=at(5), end=at(8))


# ------------------------------------------------------------------------------------------------ the CLI


def _write_policies(directory: Path, specs: dict[str, dict]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, spec in specs.items():
        (directory / f"{name}.yaml").write_text(policy_text(name, **spec))
    return directory


def test_the_cli_prints_a_table_and_json(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'kb.db'}"
    upgrade(url)
    engine = create_engine_for(url)
    try:
        record(engine, policy_set(POLICY_SET_A), ticks=12)
    finally:
        engine.dispose()
    live_dir = _write_policies(tmp_path / "policies", POLICY_SET_A)
    candidate = dict(POLICY_SET_A)
    del candidate["watch-drift"]
    candidate_dir = _write_policies(tmp_path / "candidate", candidate)
    config = tmp_path / "mape.yaml"
    config.write_text(yaml.safe_dump({"db_url": url, "policies_dir": str(live_dir), "tick_interval": "1h"}))
    span = ["--from", at(0).isoformat(), "--to", at(11).isoformat()]

    same = runner.invoke(app, ["policy", "simulate", "--config", str(config), *span])
    assert same.exit_code == 0, same.output
    assert same.output.startswith(LEGEND)
    assert "\n2026-01-05T04:00:00+00:00\n  =  m1  ask-on-drift " in same.output  # every decision, as it goes
    assert "\nreplayed 12 ticks from 2026-01-05T00:00:00+00:00 to 2026-01-05T11:00:00+00:00: 3 models" in same.output
    assert "no differences: the candidate policies decide as the live planner did on all 12 ticks" in same.output

    diff = runner.invoke(app, ["policy", "simulate", "--config", str(config), "--policies", str(candidate_dir),
                               "--only-diff", *span])
    assert diff.exit_code == 0, diff.output
    assert "- " in diff.output and "watch-drift" in diff.output and "dry_run -> -" in diff.output
    assert "first divergence: 2026-01-05T00:00:00+00:00: m2/watch-drift dry_run -> -" in diff.output
    table = diff.output.split("\nreplayed ")[0]
    assert not [line for line in table.splitlines() if line.startswith("  =  ")]  # --only-diff: no unchanged rows

    as_json = runner.invoke(app, ["policy", "simulate", "--config", str(config), "--policies", str(candidate_dir),
                                  "--json", *span])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["summary"]["ticks"] == 12
    assert data["summary"]["statuses"]["dry_run"]["simulated"] == 0
    assert data["summary"]["differences"]["live_only"] == data["summary"]["statuses"]["dry_run"]["live"]
    first = data["ticks"][0]
    assert set(first) == {"at", "decisions", "live", "diff"}
    assert {"model": "m2", "policy": "watch-drift", "action": "retrain", "status": "dry_run"}.items() <= \
        first["diff"]["live_only"][0].items()


def test_the_cli_refuses_a_bad_policy_file_and_an_empty_range(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'kb.db'}"
    config = tmp_path / "mape.yaml"
    config.write_text(yaml.safe_dump({"db_url": url}))
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    (bad_dir / "typo.yaml").write_text(policy_text("typo", when="drfit.share_drifted > 0.3"))
    bad = runner.invoke(app, ["policy", "simulate", "--config", str(config), "--policies", str(bad_dir)])
    assert bad.exit_code == 2
    assert f"{bad_dir / 'typo.yaml'}" in bad.output and "unknown name 'drfit'" in bad.output

    empty = runner.invoke(app, ["policy", "simulate", "--config", str(config),
                                "--policies", str(_write_policies(tmp_path / "ok", {"p": {}}))])
    assert empty.exit_code == 2
    assert "no recorded ticks: nothing to replay" in empty.output

    both = runner.invoke(app, ["policy", "simulate", "--config", str(config), "--since", "1d",
                               "--from", at(0).isoformat()])
    assert both.exit_code == 2 and "--since" in both.output
