"""Two controllers share one fleet through model leases: each ticks, plans and acts only for the models it holds.

Real controllers on one knowledge base (SQLite and PostgreSQL); the leases
run on the wall clock, the ticks on logical times that both controllers share.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import BaseModel
from sqlmodel import select

from knowledge import leases
from knowledge.database import session_scope
from knowledge.migrate import upgrade
from knowledge.tables import ActionRun, AuditEvent, Tick
from mape.config import ModelConfig, Settings
from mape.controller import Controller
from mape.execute.registry import ActionRegistry, action

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
MODELS = ["m0", "m1", "m2", "m3"]


class Mark(BaseModel):
    note: str = ""


@pytest.fixture
def actions() -> ActionRegistry:
    registry = ActionRegistry()

    @action("mark", params=Mark, registry=registry)
    def mark(ctx, params: Mark) -> dict:
        """Does nothing but succeed: which controller ran it is in the audit trail."""
        return {"model": ctx.model.name}

    return registry


def _model(name: str) -> ModelConfig:
    source = {"kind": "parquet", "path": "/nonexistent"}
    return ModelConfig(name=name, features={"numeric": ["x"]}, inference=source, labels_source=source,
                       training={"entrypoint": "examples.credit.model:train"})


@pytest.fixture
def controllers(db_url, tmp_path: Path, actions):
    upgrade(db_url)
    (tmp_path / "policies").mkdir()

    def controller(name: str) -> Controller:
        settings = Settings(db_url=db_url, controller_id=name, models=[_model(m) for m in MODELS],
                            policies_dir=tmp_path / "policies", serving_dir=tmp_path / "serving",
                            artifacts_dir=tmp_path / "artifacts", energy_metering=False,
                            leases={"enabled": True, "duration": "15s", "renew_every": "5s"})
        return Controller(settings, actions=actions, migrate=False)

    a, b = controller("a"), controller("b")
    yield a, b
    a.engine.dispose()
    b.engine.dispose()


def _ids(controller: Controller) -> dict[str, int]:
    with session_scope(controller.engine) as session:
        return controller._model_ids(session)


def test_each_controller_ticks_and_acts_only_for_the_models_it_holds(controllers):
    a, b = controllers
    a.tick(T0)
    assert sorted(_ids(a)) == MODELS  # alone, it holds the fleet
    b.tick(T0)  # the same logical time: a tick of its own
    assert _ids(b) == {}  # nothing is free yet
    at = T0 + timedelta(minutes=5)
    a.tick(at)  # "a" sees two members: it releases its surplus
    b.tick(at)  # and "b" takes it
    mine_a, mine_b = _ids(a), _ids(b)
    assert len(mine_a) == len(mine_b) == 2 and set(mine_a).isdisjoint(mine_b)
    with session_scope(a.engine) as session:
        ticks = sorted((t.controller_id, t.at) for t in session.exec(select(Tick)))
    assert ticks == [("a", T0), ("a", at), ("b", T0), ("b", at)]

    # a person asks for an action on every model; each runs once, by the model's holder
    for name in MODELS:
        a.request_action(name, "mark", actor="ada", reason="test", at=at)
    later = at + timedelta(minutes=5)
    report_a, report_b = a.tick(later), b.tick(later)
    assert sorted(r.model for r in report_a.actions) == sorted(mine_a)
    assert sorted(r.model for r in report_b.actions) == sorted(mine_b)
    with session_scope(a.engine) as session:
        runs = list(session.exec(select(ActionRun)))
        dispatched = {e.payload["decision"]: e.actor for e in session.exec(
            select(AuditEvent).where(AuditEvent.kind == "action.dispatched"))}
    assert len(runs) == 4 and {r.state for r in runs} == {"succeeded"} and {r.attempts for r in runs} == {1}
    holder = {**{mine_a[n]: "a" for n in mine_a}, **{mine_b[n]: "b" for n in mine_b}}
    assert {r.model_id: dispatched[r.decision_id] for r in runs} == holder


def test_a_controller_cannot_claim_a_run_of_a_model_it_does_not_hold(controllers):
    a, b = controllers
    a.tick(T0)
    b.tick(T0)
    at = T0 + timedelta(minutes=5)
    a.tick(at)
    b.tick(at)
    theirs = next(iter(_ids(b)))
    b.request_action(theirs, "mark", actor="ada", reason="test", at=at)
    with session_scope(b.engine) as session:
        b.executor.dispatch(session, at)  # b creates the run; a tries to start it
        run_id = session.exec(select(ActionRun.id)).one()
    assert a.executor.claim(run_id, at) is False
    assert b.executor.claim(run_id, at) is True


def test_a_controller_whose_leases_lapsed_does_nothing_until_it_holds_them_again(controllers, monkeypatch):
    a, _ = controllers
    a.tick(T0)
    assert sorted(_ids(a)) == MODELS
    later = datetime.now(timezone.utc) + timedelta(seconds=16)  # a paused process: its leases ran out
    monkeypatch.setattr(a.leases, "clock", lambda: later)
    with session_scope(a.engine) as session:
        assert leases.held(session, "a", later) == frozenset()
    assert a.owned() == frozenset()
    a.tick(T0 + timedelta(minutes=5))  # its round takes them again, each with a new epoch
    assert sorted(_ids(a)) == MODELS
    with session_scope(a.engine) as session:
        assert {row.epoch for row in leases.leases(session)} == {2}
