"""From decision to action: how long until an immediate action starts, and how many ticks a rollback takes.

Part 1, **decision to action start**, in the embedded setup (``tick_flow`` in
this process against a temporary Prefect server from ``prefect_test_harness``,
a SQLite knowledge base). Three models, a policy that fires for each on every
tick (``when: "true"``, no cooldown) and a no-op action. The decisions are
committed when the planning stage returns; the latency of an action is from
then to the first line of its effector. In between: the stage task's report
to Prefect, dispatch (the run rows), and per action the run's read, the flow
run's idempotent creation, the claim and the flow run's start. The three
actions of a tick run one after another, so the second and third also wait
for the ones before them: ``first`` is the first action of each tick. The
same loop without Prefect (``Controller.tick``) is measured for comparison.

Part 2, **rollback in ticks**: a person asks for a rollback of a model whose
newest version is in production (``Controller.tick`` with a clock stepped 5
minutes per tick, the built-in ``rollback`` action). Counted: ticks from the
one that dispatches it to the one whose end sees the previous version in
production again; once undisturbed, and once with the controller killed in
the middle of the rollback (the state a SIGKILL leaves: the run ``running``,
claimed by a process that no longer exists, its writes rolled back).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import yaml  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from benchmarks.machine import describe, write_results  # noqa: E402
from mape.execute.registry import action, default_registry  # noqa: E402

MODELS = ("m0", "m1", "m2")
ACTION = "bench-noop"
STARTS: list[tuple[int, float]] = []  # (action run id, perf_counter at the effector's first line)

POLICY = f"""\
apiVersion: mape/v1
kind: Policy
metadata: {{name: bench-always}}
spec:
  when: "true"
  action: {{type: {ACTION}, params: {{}}}}
  cooldown: 0s
"""


class NoParams(BaseModel):
    """The benchmark's action takes no parameters."""


def _noop(ctx: Any, params: NoParams) -> dict[str, Any]:
    """Record when the effector starts; do nothing else."""
    STARTS.append((ctx.run.id, time.perf_counter()))
    return {}


if ACTION not in default_registry:
    action(ACTION, params=NoParams, registry=default_registry)(_noop)


def _config(directory: Path, *, policy: bool) -> Path:
    source = {"kind": "parquet", "path": str(directory / "no-such-log.parquet")}
    model = {"features": {"numeric": ["x"]}, "inference": source, "labels_source": source,
             "training": {"entrypoint": "examples.credit.model:train"}}
    policies = directory / "policies"
    policies.mkdir(parents=True)
    if policy:
        (policies / "always.yaml").write_text(POLICY)
    config = directory / "mape.yaml"
    config.write_text(yaml.safe_dump({
        "db_url": f"sqlite:///{directory / 'kb.db'}", "policies_dir": str(policies),
        "artifacts_dir": str(directory / "artifacts"), "serving_dir": str(directory / "serving"),
        "energy_metering": False, "models": [{"name": name, **model} for name in MODELS],
    }, sort_keys=False))
    return config


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"n": len(ordered), "p50_ms": round(1000 * statistics.median(ordered), 1),
            "p95_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
            "max_ms": round(1000 * ordered[-1], 1)}


def _latencies(run_tick: Any, controller: Any, ticks: int) -> dict[str, Any]:
    """Tick ``ticks`` times; per tick, from the end of planning to each action's start."""
    planned: list[float] = []
    plan = controller.plan

    def timed_plan(at: datetime) -> dict[str, Any]:
        result = plan(at)
        planned.append(time.perf_counter())
        return result

    controller.plan = timed_plan
    first: list[float] = []
    every: list[float] = []
    try:
        for _ in range(ticks + 1):
            STARTS.clear()
            run_tick()
            if len(STARTS) != len(MODELS):
                raise RuntimeError(f"expected {len(MODELS)} actions in a tick, got {len(STARTS)}")
            delays = [start - planned[-1] for _, start in sorted(STARTS, key=lambda s: s[1])]
            first.append(delays[0])
            every.extend(delays)
    finally:
        controller.plan = plan
    # the first tick of a process pays for warming up (imports, first API calls): reported apart
    return {"first_tick_first_action_ms": round(1000 * first[0], 1), "first_action": _percentiles(first[1:]),
            "every_action": _percentiles(every[len(MODELS):])}


def measure_latency(ticks: int = 20) -> dict[str, Any]:
    from prefect.testing.utilities import prefect_test_harness

    from flows.controllers import controller_for
    from flows.tick import tick_flow
    from mape.config import load_settings
    from mape.controller import Controller

    results: dict[str, Any] = {"ticks": ticks, "models": len(MODELS)}
    with tempfile.TemporaryDirectory() as tmp:
        config = _config(Path(tmp) / "plain", policy=True)
        controller = Controller(load_settings(config))
        results["without_prefect"] = _latencies(lambda: controller.tick(datetime.now(timezone.utc)), controller,
                                                ticks)
        controller.engine.dispose()
    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=180):
        config = _config(Path(tmp) / "prefect", policy=True)
        controller = controller_for(str(config))
        results["prefect_embedded"] = _latencies(lambda: tick_flow(config_file=str(config)), controller, ticks)
    return results


def measure_rollback() -> dict[str, Any]:
    from sqlalchemy import update
    from sqlmodel import select

    from knowledge import registry
    from knowledge.database import session_scope
    from knowledge.tables import ActionRun
    from mape.config import load_settings
    from mape.controller import Controller
    from mape.execute.claims import this_process

    interval = timedelta(minutes=5)
    results: dict[str, Any] = {"tick_interval_s": interval.total_seconds(),
                               "rollback_retry_delay_s": default_registry.get("rollback").retry_delay.total_seconds()}
    for case in ("undisturbed", "killed_mid_rollback"):
        with tempfile.TemporaryDirectory() as tmp:
            now = [datetime(2026, 11, 2, 9, tzinfo=timezone.utc)]
            controller = Controller(load_settings(_config(Path(tmp), policy=False)), clock=lambda: now[0])
            with session_scope(controller.engine) as session:
                model_id = registry.get_model(session, "m0").id
                for version in (1, 2):
                    row = registry.register_version(session, model_id=model_id, artifact_uri=f"file:///v{version}")
                    registry.promote(session, row, actor="bench", at=now[0])
            decision = controller.request_action("m0", "rollback", actor="bench", reason="regression", at=now[0])
            ticks = 0
            while True:
                if case == "killed_mid_rollback" and ticks == 0:
                    with session_scope(controller.engine) as session:
                        controller.executor.dispatch(session, now[0])
                        (run_id,) = controller.executor.runnable(session, now[0])
                    controller.executor.claim(run_id, now[0])  # ... and the process dies here
                    dead = replace(this_process(), started="0")
                    with session_scope(controller.engine) as session:
                        session.execute(update(ActionRun).where(ActionRun.id == run_id).values(claimed_by=str(dead)))
                else:
                    controller.tick(now[0])
                with session_scope(controller.engine) as session:
                    production = registry.production_version(session, model_id)
                    run = session.exec(select(ActionRun).where(ActionRun.decision_id == decision.id)).one()
                    state, attempts = run.state, run.attempts
                if production is not None and production.version == 1:
                    break
                ticks += 1
                now[0] += interval
                if ticks > 10:
                    raise RuntimeError(f"no rollback after 10 ticks ({case})")
            results[case] = {"ticks_after_the_deciding_tick": ticks, "attempts": attempts, "run_state": state}
            controller.engine.dispose()
    return results


def main() -> None:
    results: dict[str, Any] = {"machine": describe()}
    began = time.perf_counter()
    results["decision_to_action_start"] = measure_latency()
    results["rollback"] = measure_rollback()
    results["runtime_s"] = round(time.perf_counter() - began, 1)
    write_results("action_latency", results)


if __name__ == "__main__":
    main()
