"""Reconciliation and fencing: a run left ``running`` by a dead process is retried once, never run twice.

The dead process is this one under another start time (a reused pid counts as
dead); the orchestrator is a dict standing in for Prefect's flow runs
(``tests/e2e/test_crash_recovery.py`` does it with real processes and a real
Prefect server).
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel
from sqlalchemy import update
from sqlmodel import select

from knowledge import audit, queries, registry
from knowledge.database import session_scope
from knowledge.tables import ActionRun, AuditEvent, Decision, ModelVersion
from mape.config import ModelConfig
from mape.execute.claims import Claimer, alive, this_process
from mape.execute.executor import Executor
from mape.execute.reconcile import agrees, reconcile
from mape.execute.registry import ActionRegistry, action


class Params(BaseModel):
    """The test action takes no parameters."""


class FakeFlowRuns:
    """Flow run states by id, as Prefect would answer; ``marks`` records every correction."""

    def __init__(self, states: dict[str, str] | None = None, ticks: dict[str, str | None] | None = None) -> None:
        self.flow = dict(states or {})
        self.ticks = dict(ticks or {})  # tick flow runs: the process tag of each
        self.marks: list[tuple[str, str]] = []
        self.asked_for: list[str | None] = []

    def states(self, flow_run_ids: Collection[str]) -> dict[str, str]:
        return {i: self.flow[i] for i in flow_run_ids if i in self.flow}

    def unfinished(self, knowledge_base: str | None = None) -> dict[str, str]:
        self.asked_for.append(knowledge_base)
        return {i: s for i, s in self.flow.items() if s in ("PENDING", "SCHEDULED", "RUNNING") and i not in self.ticks}

    def unfinished_ticks(self, knowledge_base: str) -> dict[str, str | None]:
        self.asked_for.append(knowledge_base)
        return {i: process for i, process in self.ticks.items() if self.flow.get(i, "RUNNING") == "RUNNING"}

    def mark(self, flow_run_id: str, state: str, message: str) -> None:
        self.marks.append((flow_run_id, state))
        self.flow[flow_run_id] = "FAILED" if state == "TimedOut" else state


def _config(name: str) -> ModelConfig:
    source = {"kind": "parquet", "path": "/nonexistent"}
    return ModelConfig(name=name, features={"numeric": ["x"]}, inference=source, labels_source=source,
                       training={"entrypoint": "examples.credit.model:train"})


@pytest.fixture
def gate() -> dict[str, threading.Event]:
    return {}


@pytest.fixture
def executor(engine, tmp_path: Path, gate: dict[str, threading.Event]) -> Executor:
    actions = ActionRegistry()

    @action("register", params=Params, retries=1, retry_delay=timedelta(minutes=1), timeout=timedelta(hours=1),
            registry=actions)
    def register(ctx, params: Params) -> dict:
        """Registers a version (committed with the run's success); waits for the test if it set a gate."""
        if "entered" in gate:
            gate["entered"].set()
            gate["release"].wait(10)
        version = registry.register_version(ctx.session, model_id=ctx.model.id, artifact_uri=f"file:///{ctx.run.id}",
                                            created_by_action_run_id=ctx.run.id)
        return {"version": version.version}

    with session_scope(engine) as session:
        for name in ("a", "b"):
            registry.upsert_model(session, name=name)
    return Executor(engine, actions, models={n: _config(n) for n in ("a", "b")}, artifacts_dir=tmp_path)


def _decide(engine, model: str, clock, key: str) -> int:
    with session_scope(engine) as session:
        model_id = registry.get_model(session, model).id
        decision = Decision(model_id=model_id, policy_name="p", action="register", params={}, status="proposed",
                            dedup_key=key, created_at=clock())
        session.add(decision)
        session.flush()
        return decision.id


def _dispatch(engine, executor: Executor, clock) -> list[ActionRun]:
    with session_scope(engine) as session:
        return executor.dispatch(session, clock())


def _dead_claim(engine, executor: Executor, run_id: int, clock, *, flow_run_id: str | None = None,
                claimer: Claimer | None = None) -> None:
    """Claim the run as a process that then died: this pid, another start time (the pid was reused)."""
    assert executor.claim(run_id, clock(), flow_run_id=flow_run_id)
    dead = claimer or replace(this_process(), started="0")
    with session_scope(engine) as session:
        session.execute(update(ActionRun).where(ActionRun.id == run_id).values(claimed_by=str(dead)))


def _run(engine, run_id: int) -> ActionRun:
    with session_scope(engine) as session:
        run = session.get(ActionRun, run_id)
        session.expunge(run)
        return run


def test_claimers_tell_this_process_from_a_dead_one_and_another_host():
    me = this_process()
    assert alive(me) is True
    assert alive(replace(me, started="0")) is False
    assert alive(replace(me, pid=2 ** 22 + 1)) is False  # beyond pid_max: no such process
    assert alive(replace(me, host="elsewhere")) is None
    assert Claimer.parse(str(me)) == me and Claimer.parse("garbage") is None and Claimer.parse(None) is None


def test_a_run_whose_process_died_is_retried_and_then_succeeds_once(engine, executor, clock):
    _decide(engine, "a", clock, "k1")
    (run,) = _dispatch(engine, executor, clock)
    _dead_claim(engine, executor, run.id, clock)
    clock.advance(timedelta(minutes=5))

    report = reconcile(executor, clock())
    (change,) = report.changes
    assert (change.state_before, change.state_after) == ("running", "pending")
    assert change.reason.startswith("attempt 1 was lost: its process ") and "is gone" in change.reason
    retried = _run(engine, run.id)
    # the backoff (1 min) counts from the lost attempt's start, 5 minutes ago: runnable at once
    assert retried.scheduled_for == clock() and retried.attempts == 1
    assert reconcile(executor, clock()).changes == []  # nothing left to do: idempotent

    clock.advance(timedelta(minutes=1))
    with session_scope(engine) as session:
        assert executor.runnable(session, clock()) == [run.id]
    assert executor.run(run.id, clock()).state == "succeeded"
    with session_scope(engine) as session:
        assert len(session.exec(select(ModelVersion)).all()) == 1
        kinds = [e.kind for e in session.exec(select(AuditEvent).order_by(AuditEvent.id))]
        assert audit.verify_chain(session).ok
    assert kinds.count("action.reconciled") == 1 and kinds.count("action.retrying") == 1


def test_a_lost_attempt_past_the_retries_fails_the_run(engine, executor, clock):
    _decide(engine, "a", clock, "k1")
    (run,) = _dispatch(engine, executor, clock)
    for _ in range(2):  # retries=1: two attempts, both lost
        _dead_claim(engine, executor, run.id, clock)
        reconcile(executor, clock())
        clock.advance(timedelta(minutes=5))
    final = _run(engine, run.id)
    assert final.state == "failed" and final.attempts == 2 and final.message.startswith("was lost: its process ")


def test_a_live_claimer_is_left_alone_and_another_hosts_claim_waits_for_the_orchestrator(engine, executor, clock):
    _decide(engine, "a", clock, "k1")
    _decide(engine, "b", clock, "k2")
    mine, remote = _dispatch(engine, executor, clock)
    assert executor.claim(mine.id, clock(), flow_run_id="f-mine")
    _dead_claim(engine, executor, remote.id, clock, flow_run_id="f-remote",
                claimer=replace(this_process(), host="elsewhere"))
    flows = FakeFlowRuns({"f-mine": "RUNNING", "f-remote": "RUNNING"})
    report = reconcile(executor, clock(), flow_runs=flows)
    assert report.changes == [] and sorted(report.left_running) == sorted([mine.id, remote.id])
    # Prefect ended the remote attempt's flow run (its worker saw the process crash): the attempt is lost
    flows.flow["f-remote"] = "CRASHED"
    (change,) = reconcile(executor, clock(), flow_runs=flows).changes
    assert change.run_id == remote.id and change.state_after == "pending" and flows.marks == []
    assert _run(engine, mine.id).state == "running"


def test_prefect_is_brought_into_line_with_the_knowledge_base(engine, executor, clock):
    for key in ("k1", "k2", "k3"):
        _decide(engine, "a" if key != "k3" else "b", clock, key)
    lost, done, retrying = _dispatch(engine, executor, clock)
    _dead_claim(engine, executor, lost.id, clock, flow_run_id="f-lost")
    flows = FakeFlowRuns({"f-lost": "RUNNING", "f-done": "RUNNING", "f-retrying": "RUNNING"})
    reconcile(executor, clock(), flow_runs=flows)  # frees model a
    # killed after committing the outcome, before telling Prefect
    assert executor.claim(done.id, clock(), flow_run_id="f-done") and executor.attempt(done.id, clock()).state == \
        "succeeded"
    with session_scope(engine) as session:
        session.execute(update(ActionRun).where(ActionRun.id == retrying.id)
                        .values(flow_run_id="f-retrying", attempts=1, message="attempt 1 failed: boom"))
    report = reconcile(executor, clock(), flow_runs=flows)
    assert sorted(flows.marks) == sorted([("f-lost", "CRASHED"), ("f-done", "COMPLETED"), ("f-retrying", "FAILED")])
    assert {c.run_id for c in report.changes} == {done.id, retrying.id}
    for run in (lost, done, retrying):
        current = _run(engine, run.id)
        assert agrees(current.state, flows.flow[current.flow_run_id]), (current.state, flows.flow)
    assert reconcile(executor, clock(), flow_runs=flows).changes == []


def test_an_attempt_timed_out_while_it_ran_commits_nothing(engine, executor, clock, gate):
    _decide(engine, "a", clock, "k1")
    (run,) = _dispatch(engine, executor, clock)
    gate.update(entered=threading.Event(), release=threading.Event())
    outcome: list[ActionRun | None] = []
    worker = threading.Thread(target=lambda: outcome.append(executor.run(run.id, clock())))
    worker.start()
    assert gate["entered"].wait(10)
    with session_scope(engine) as session:  # another tick, two hours later, times the attempt out
        executor.dispatch(session, clock() + timedelta(hours=2))
    gate["release"].set()
    worker.join(10)
    (ended,) = outcome
    assert ended is not None and ended.state == "timed_out"
    with session_scope(engine) as session:
        assert session.exec(select(ModelVersion)).all() == []  # the version it registered was rolled back
        assert session.get(ActionRun, run.id).state == "timed_out"


def test_at_most_one_run_per_model_is_running(engine, executor, clock):
    for key in ("k1", "k2", "k3"):
        _decide(engine, "a" if key != "k3" else "b", clock, key)
    first, second, other_model = _dispatch(engine, executor, clock)
    assert executor.claim(first.id, clock())
    assert not executor.claim(second.id, clock())  # model a is busy
    assert executor.claim(other_model.id, clock())  # model b is not
    assert executor.attempt(first.id, clock()).state == "succeeded"
    assert executor.claim(second.id, clock())


def test_a_tick_that_did_not_plan_does_not_start_a_deferred_run(engine, executor, clock):
    _decide(engine, "a", clock, "k1")
    with session_scope(engine) as session:
        session.execute(update(Decision).values(not_before=clock() + timedelta(hours=1)))
    (run,) = _dispatch(engine, executor, clock)
    assert run.state == "scheduled"
    clock.advance(timedelta(hours=2))
    with session_scope(engine) as session:
        assert executor.runnable(session, clock(), deferred=False) == []
        assert executor.runnable(session, clock()) == [run.id]


def test_each_knowledge_base_has_an_identity_of_its_own_for_the_keys_prefect_sees(engine, tmp_path: Path):
    from knowledge.database import create_engine_for
    from knowledge.migrate import upgrade

    with session_scope(engine) as session:
        first = queries.knowledge_base_id(session)
    with session_scope(engine) as session:
        assert queries.knowledge_base_id(session) == first
    other_url = f"sqlite:///{tmp_path / 'other' / 'kb.db'}"
    upgrade(other_url)
    other = create_engine_for(other_url)
    with session_scope(other) as session:
        assert queries.knowledge_base_id(session) != first
    other.dispose()


def test_ticks_whose_process_is_gone_are_marked_crashed_and_only_those(engine, executor, clock):
    me = this_process()
    ticks = {"t-dead": str(replace(me, started="0")),  # this host, the pid reused by another process
             "t-rebooted": str(replace(me, boot="0ld-b00t")),
             "t-live": str(me), "t-elsewhere": str(replace(me, host="another-host")),
             "t-untagged": None, "t-foreign": "not a process"}
    flows = FakeFlowRuns(ticks=ticks)

    report = reconcile(executor, clock(), flow_runs=flows)

    assert sorted(flows.marks) == [("t-dead", "CRASHED"), ("t-rebooted", "CRASHED")]
    assert sorted(report.crashed_ticks) == ["t-dead", "t-rebooted"]
    assert "tick flow run t-dead: RUNNING -> CRASHED" in report.as_dict()["reconciled"]
    with session_scope(engine) as session:
        instance = queries.knowledge_base_id(session)
        events = session.exec(select(AuditEvent).where(AuditEvent.kind == "tick.reconciled")).all()
    assert sorted(e.payload["flow_run_id"] for e in events) == ["t-dead", "t-rebooted"]
    assert set(flows.asked_for) == {instance}, "only this knowledge base's flow runs are read"
    assert reconcile(executor, clock(), flow_runs=flows).crashed_ticks == []  # once
