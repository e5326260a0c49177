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


def test_a_requested_retrain_gives_a_model_without_versions_its_first_production_version(tmp_path: Path):
    from datetime import timedelta

    from examples.credit.demo import MODEL, Scenario, write_config
    from examples.credit.serving import CreditServing
    from knowledge import registry
    from mape.config import load_settings
    from mape.controller import Controller

    policies = tmp_path / "policies"
    policies.mkdir()
    config = write_config(tmp_path, policies)
    controller = Controller(load_settings(config))
    scenario = Scenario(rows_per_hour=300)
    serving = CreditServing(tmp_path / "data", controller.engine, MODEL, rows_per_hour=300)
    # a log served by some earlier system: requests with predictions and labels, no version in mape yet
    history = serving.requests(scenario.at(0) - timedelta(hours=6), drifted=False, hours=6)
    log = history.drop(columns=["label"]).assign(prediction=0, model_version=0)
    log.to_parquet(tmp_path / "data" / "inference" / "legacy.parquet", index=False)
    history[["request_id", "timestamp", "label"]].rename(columns={"timestamp": "labelled_at"}).to_parquet(
        tmp_path / "data" / "labels" / "legacy.parquet", index=False)

    controller.request_action(MODEL, "retrain", params={"window": "6h"}, actor="alice", reason="first version",
                              at=scenario.at(0))
    report = controller.tick(scenario.at(0))
    (run,) = report.actions
    assert run.state == "succeeded" and run.result["promoted"] is True, run
    assert "no production version to beat" in run.result["reason"]
    with session_scope(controller.engine) as session:
        production = registry.production_version(session, registry.get_model(session, MODEL).id)
    assert production is not None and production.version == 1 and production.metrics["accuracy"] > 0.8
