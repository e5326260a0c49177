"""A tick repeated at the same logical time (a Prefect retry, a restart) senses, plans and acts only once."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import func, select

from knowledge.database import session_scope
from knowledge.tables import ActionRun, Decision, Observation, Tick
from tests.controller.world import make_world

ALWAYS = """\
apiVersion: mape/v1
kind: Policy
metadata: {name: always-retrain}
spec:
  when: "has(drift.share_drifted)"
  action: {type: retrain, params: {window: 12h, min_train_rows: 100}}
  cooldown: 0s
"""


def _counts(engine) -> tuple[int, int, int, int]:
    with session_scope(engine) as session:
        return tuple(session.exec(select(func.count()).select_from(t)).one()  # type: ignore[return-value]
                     for t in (Observation, Decision, ActionRun, Tick))


def test_repeating_a_tick_adds_nothing(tmp_path: Path, db_url: str):
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "always.yaml").write_text(ALWAYS)
    world = make_world(tmp_path / "world", policies, db_url=db_url)
    world.serve_hour(1)
    at = world.scenario.at(1)

    first = world.controller.tick(at)
    assert not first.repeated and not first.errors
    assert [d.policy for d in first.decisions] == ["always-retrain"]
    after_first = _counts(world.controller.engine)
    assert after_first[0] > 0 and after_first[1:] == (1, 1, 1)

    second = world.controller.tick(at)
    assert second.repeated
    assert _counts(world.controller.engine) == after_first
    with session_scope(world.controller.engine) as session:
        run = session.exec(select(ActionRun)).one()
    assert run.state == "succeeded" and run.attempts == 1
