"""Crash test: SIGKILL the controller at random points during actions, 50 times in a row, against a real Prefect server.

Afterwards no action ran twice, none was lost, and the knowledge base and
Prefect agree. The controller processes are forked by
``tests/e2e/crash_driver.py`` (one fresh process per life, without paying the
imports each time) and run ``tick_flow`` against the session's Prefect server
with a SQLite (or PostgreSQL) knowledge base. The action is an installed plugin (entry point
``mape.actions``): it sleeps 0.4-1.6 s, registers a model version (committed
with the run's success) and writes an effect file named by the run's
idempotency key (once: a later attempt finds it and keeps it), appending to a
journal what it started and did.

Each life: one more decision is approved (manual request, one of three
models, so runs of a model queue behind each other), a controller is started,
and SIGKILLed at a seeded random point: for most lives 0-1.8 s after an action
of that controller started (its work, its commit, the moment after its
effect, its report to Prefect, the next claim), for a fifth anywhere in its
first 3 s. Then one controller ticks until nothing is in flight, and one
``mape tick`` from the command line (a fresh interpreter) finds nothing left
to reconcile. It runs on both knowledge-base backends: 50 lives on SQLite
(about 4 minutes on 2 cores) and 15 on PostgreSQL (about 80 s).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from uuid import UUID

import pytest
import yaml
from sqlmodel import select

from knowledge import audit, queries, registry
from knowledge.database import create_engine_for, session_scope
from knowledge.tables import ActionRun, AuditEvent, Decision, ModelVersion
from mape.execute.reconcile import agrees

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
LIVES = int(os.environ.get("CRASH_TEST_LIVES", "50"))  # fewer while debugging
PG_LIVES = int(os.environ.get("CRASH_TEST_PG_LIVES", "15"))  # the PostgreSQL half: the same, shorter
SEED = 20261123
MODELS = ("m0", "m1", "m2")
ANYWHERE = 0.2  # the share of kills at a random time of the life; the others strike a random time into an action

PLUGIN = '''\
"""A slow action whose every effect can be counted (the crash test's plugin)."""

import os
import time
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel

from knowledge import registry
from mape.execute.registry import action

ROOT = Path(os.environ["CRASH_TEST_DIR"])


class WorkParams(BaseModel):
    seconds: float = 1.0


def _append(name, line):
    fd = os.open(ROOT / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\\n").encode())
    finally:
        os.close(fd)


@action("crash-work", params=WorkParams, retries=1000, retry_delay=timedelta(0), timeout=timedelta(hours=1))
def crash_work(ctx, params):
    """Work a while, register a version, and write an effect file named by the run's idempotency key."""
    key, attempt, pid = ctx.run.idempotency_key, ctx.run.attempts, os.getpid()
    _append("journal.log", f"start {key} {attempt} {pid} {time.time():.6f}")
    deadline = time.monotonic() + params.seconds
    while time.monotonic() < deadline:
        time.sleep(0.02)
    version = registry.register_version(ctx.session, model_id=ctx.model.id, artifact_uri=f"file:///crash/{key}",
                                        created_by_action_run_id=ctx.run.id)
    effect = ROOT / "effects" / key
    if effect.exists():  # an earlier attempt applied it, and was killed before its success committed
        _append("effects.log", f"kept {key} {attempt} {pid}")
    else:
        partial = effect.with_suffix(".partial")
        partial.write_text(f"{attempt} {pid}")
        os.replace(partial, effect)
        _append("effects.log", f"applied {key} {attempt} {pid}")
    time.sleep(0.15)  # the effect's confirmation: a kill here repeats the attempt, not the effect
    _append("journal.log", f"end {key} {attempt} {pid} {time.time():.6f}")
    return {"version": version.version, "attempt": attempt}
'''


def _install_plugin(site: Path) -> None:
    (site / "crash_work").mkdir(parents=True)
    (site / "crash_work" / "__init__.py").write_text("")
    (site / "crash_work" / "actions.py").write_text(PLUGIN)
    info = site / "crash_work-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: crash-work\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[mape.actions]\ncrash = crash_work.actions\n")


def _config(directory: Path, db_url: str) -> Path:
    source = {"kind": "parquet", "path": str(directory / "no-such-log.parquet")}
    model = {"features": {"numeric": ["x"]}, "inference": source, "labels_source": source,
             "training": {"entrypoint": "examples.credit.model:train"}}
    (directory / "policies").mkdir()
    config = directory / "mape.yaml"
    config.write_text(yaml.safe_dump({
        "db_url": db_url, "policies_dir": str(directory / "policies"),
        "artifacts_dir": str(directory / "artifacts"), "serving_dir": str(directory / "serving"),
        "controller_id": "crash-test", "energy_metering": False,
        "models": [{"name": name, **model} for name in MODELS],
    }, sort_keys=False))
    return config


def _approve(engine, n: int, rng: random.Random) -> None:
    """A person asks for one more action (approved at once, like ``mape actions request``)."""
    now = datetime.now(timezone.utc)
    with session_scope(engine) as session:
        model = registry.get_model(session, MODELS[n % len(MODELS)])
        session.add(Decision(created_at=now, model_id=model.id, policy_name="manual", action="crash-work",
                             params={"seconds": round(rng.uniform(0.4, 1.6), 2)}, status="approved",
                             reason=f"crash test {n}", actor="tester", decided_by="tester", decided_at=now,
                             dedup_key=f"crash/{n}"))


def _wait_for_start(journal: Path, pid: int, *, timeout: float) -> None:
    """Until the process ``pid`` has started an action (a ``start`` line of the journal names it)."""
    deadline = time.monotonic() + timeout
    needle = f" {pid} "
    while time.monotonic() < deadline:
        if journal.exists() and any(line.startswith("start ") and needle in line
                                    for line in journal.read_text().splitlines()[-20:]):
            return
        time.sleep(0.02)


def _journal(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def world(tmp_path: Path, db_url: str, prefect_server: None):
    from prefect.settings import PREFECT_API_URL

    site = tmp_path / "site"
    _install_plugin(site)
    (tmp_path / "effects").mkdir()
    (tmp_path / "logs").mkdir()
    config = _config(tmp_path, db_url)
    engine = create_engine_for(db_url)
    with session_scope(engine) as session:
        for name in MODELS:
            registry.upsert_model(session, name=name)
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "CRASH_TEST_DIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]), "PREFECT_LOGGING_LEVEL": "WARNING",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    driver = subprocess.Popen([sys.executable, "-m", "tests.e2e.crash_driver", str(config), str(tmp_path / "logs")],
                              cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert driver.stdout is not None and driver.stdin is not None
    assert driver.stdout.readline().strip() == "ready"
    yield tmp_path, config, engine, driver, env, LIVES if db_url.startswith("sqlite") else PG_LIVES
    driver.stdin.close()  # the zygote leaves at the end of its input; its children die with it (PR_SET_PDEATHSIG)
    try:
        driver.wait(timeout=10)
    except subprocess.TimeoutExpired:
        driver.kill()
        driver.wait()
    engine.dispose()


def _ask(driver: subprocess.Popen, command: str) -> str:
    driver.stdin.write(command + "\n")  # type: ignore[union-attr]
    driver.stdin.flush()  # type: ignore[union-attr]
    return driver.stdout.readline().strip()  # type: ignore[union-attr]


@pytest.mark.timeout(900)
def test_fifty_kills_in_a_row_lose_nothing_run_nothing_twice_and_leave_prefect_in_agreement(world):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    from flows.actions import prefect_key
    from flows.prefect_runs import knowledge_base_tag, read_all

    directory, config, engine, driver, env, lives = world
    rng = random.Random(SEED)
    started = time.monotonic()
    for life in range(lives):
        _approve(engine, life, rng)
        pid = int(_ask(driver, "fork"))
        if rng.random() < ANYWHERE:  # anywhere in the life: reconciling, planning, dispatching, claiming
            time.sleep(rng.uniform(0.05, 3.0))
        else:  # during an action: its work, its commit, reporting to Prefect, starting the next one
            _wait_for_start(directory / "journal.log", pid, timeout=20)
            time.sleep(rng.uniform(0.0, 1.8))
        os.kill(pid, signal.SIGKILL)
    assert _ask(driver, "quiet") == "quiet 0", (directory / "logs").iterdir()
    cli = subprocess.run([str(Path(sys.executable).parent / "mape"), "tick", "--config", str(config)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=180)
    elapsed = time.monotonic() - started
    assert cli.returncode == 0, cli.stderr[-3000:]
    last = json.loads(cli.stdout)
    assert last["reconciled"] == [] and last["actions"] == []

    # --- the knowledge base: every decision ran exactly once
    with session_scope(engine) as session:
        decisions = session.exec(select(Decision)).all()
        runs = {r.decision_id: r for r in session.exec(select(ActionRun))}
        versions = Counter(v.created_by_action_run_id for v in session.exec(select(ModelVersion)))
        reconciled = [e.payload for e in session.exec(select(AuditEvent).where(AuditEvent.kind == "action.reconciled"))]
        instance = queries.knowledge_base_id(session)
        assert audit.verify_chain(session).ok
        for run in runs.values():
            session.expunge(run)
    assert len(decisions) == lives
    assert sorted(runs) == sorted(d.id for d in decisions), "a decision without a run: lost"
    assert Counter(r.state for r in runs.values()) == {"succeeded": lives}, "every run ends, and succeeds"
    assert versions == {r.id: 1 for r in runs.values()}, "each run's version was registered exactly once"

    # --- the effects outside the knowledge base: applied once per key, kept by the attempts that repeated one
    effects = _journal(directory / "effects.log")
    applied = Counter(line[1] for line in effects if line[0] == "applied")
    assert applied == {r.idempotency_key: 1 for r in runs.values()}
    assert sorted(p.name for p in (directory / "effects").iterdir()) == sorted(applied)
    journal = _journal(directory / "journal.log")
    starts = Counter(line[1] for line in journal if line[0] == "start")
    ends = Counter(line[1] for line in journal if line[0] == "end")
    for run in runs.values():  # an attempt may die before the action starts, never start twice
        assert ends[run.idempotency_key] >= 1 and starts[run.idempotency_key] <= run.attempts
    killed_in_action = {(line[1], line[2]) for line in journal if line[0] == "start"} - \
        {(line[1], line[2]) for line in journal if line[0] == "end"}
    lost = [p for p in reconciled if p["state_before"] == "running"]

    # --- Prefect: one flow run per action run, under its idempotency key, in the state the run is in
    with get_client(sync_client=True) as client:
        flow_runs = read_all(client, limit=100_000, flow_filter=FlowFilter(name=FlowFilterName(any_=["mape-action"])))
    prefect_keys = {r.id: prefect_key(r.idempotency_key, instance) for r in runs.values()}  # this knowledge base's
    keys = set(prefect_keys.values())
    ours = [f for f in flow_runs if f.idempotency_key in keys]
    assert Counter(f.idempotency_key for f in ours) == {k: 1 for k in keys}, "one flow run per decision"
    by_id = {str(f.id): f for f in ours}
    for run in runs.values():
        flow_run = by_id[run.flow_run_id]
        assert UUID(run.flow_run_id) == flow_run.id and flow_run.idempotency_key == prefect_keys[run.id]
        assert agrees(run.state, flow_run.state_type.value), (run.id, run.state, flow_run.state_type)
        assert flow_run.state_type.value == "COMPLETED" and 1 <= flow_run.run_count <= run.attempts

    # --- Prefect: no tick of this knowledge base left RUNNING by a killed process (those that tagged themselves)
    with get_client(sync_client=True) as client:
        ticks = read_all(client, limit=100_000, flow_filter=FlowFilter(name=FlowFilterName(any_=["mape-tick"])),
                         flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[knowledge_base_tag(instance)])))
    tick_states = Counter(t.state_type.value for t in ticks)
    assert tick_states["RUNNING"] == 0, tick_states
    assert tick_states["CRASHED"] >= lives // 2, f"most killed ticks had tagged their run: {tick_states}"

    print(f"\ncrash test ({engine.dialect.name}): {lives} kills in {elapsed:.0f}s; {len(killed_in_action)} inside an "
          f"action's work, {len(lost)} attempts reconciled as lost, {sum(r.attempts for r in runs.values())} attempts for "
          f"{lives} runs, {len(effects) - len(applied)} repeated effects kept idempotent; tick flow runs "
          f"{dict(tick_states)}")
    assert len(lost) >= lives // 2 and len(killed_in_action) >= lives // 3, "the kills should land in actions often"


def test_repeated_starts_of_one_action_run_share_one_flow_run_under_its_idempotency_key(tmp_path, prefect_server):
    """Prefect itself honours the key: a second create for the same decision returns the first flow run."""
    from prefect import get_client

    from flows.actions import action_flow
    from flows.prefect_runs import PrefectFlowRuns, ensure_flow_run

    key = f"mape-decision-test-{tmp_path.name}"
    parameters = {"action_run_id": 1, "at": datetime.now(timezone.utc), "config_file": None, "claimed": True}
    with get_client(sync_client=True) as client:
        first, created = ensure_flow_run(client, action_flow, idempotency_key=key, name="action-run-1",
                                         parameters=parameters)
        again, created_again = ensure_flow_run(client, action_flow, idempotency_key=key, name="action-run-1",
                                               parameters=parameters)
    assert created and not created_again and first.id == again.id and first.idempotency_key == key
    runs = PrefectFlowRuns()
    assert runs.states([str(first.id)]) == {str(first.id): "PENDING"}
    assert runs.unfinished()[str(first.id)] == "PENDING"
    runs.mark(str(first.id), "CRASHED", "its process died")
    assert runs.states([str(first.id)]) == {str(first.id): "CRASHED"}
    assert str(first.id) not in runs.unfinished()
