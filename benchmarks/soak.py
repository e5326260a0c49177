"""Soak: 10,000 ticks back to back, memory and knowledge-base size sampled every 100 ticks (issue 7, "soak").

``python -m benchmarks.soak [--ticks N] [--models M] [--postgres]`` runs a real
:class:`mape.controller.Controller` with the shipped policies of ``policies/``
over a small credit fleet (:mod:`examples.credit`: 4 numeric and 2
categorical features, a scikit-learn pipeline per model) whose logical clock
moves five minutes a tick; ticks run one after the other in this process, as
fast as the machine goes (``Controller.tick``, the in-process tick of tests
and simulations: no Prefect flow runs; Prefect's own database is bounded by
its ``db_vacuum`` service, see ``flows/prefect_retention.py`` and its test).
Results go to ``benchmarks/results/soak.json`` with the machine's description;
``tests/controller/test_soak_benchmark.py`` runs :func:`soak` for a few hundred
ticks on a tiny fleet and checks its bookkeeping.

The world, per model (:class:`Fleet`): a version 1 trained on a day of
history and promoted; before each tick the five minutes that just ended are
scored by the version in production (:class:`examples.credit.serving.CreditServing`,
so a retrain or a rollback changes what serves) and written as one Parquet
part of the inference log and one of the labels (labels arrive 45 minutes
after the request), in a directory per day; the log keeps ``log_days`` days
of parts and deletes older day directories, as a rotating logging job does.
Every ``cycle`` (24 h) each model's population drifts for ``drift_for`` (8 h),
the models' episodes staggered over the cycle: drift is detected, accuracy
drops, ``retrain-on-drift`` retrains and promotes, and when the drift ends
the retrained version fails its verification and is rolled back. Every
``invert_every``-th episode of a model (default every second one) is a concept
change instead: the population stays as it is and its labels are inverted, so
that no version fits both that episode and the normal days. Without it one
retrain learns both populations within a week and the loop stops acting (the
first 10,000-tick run: every decision in the first 6 days); inverting the
drifted population's labels is not enough either (a second run: the shifted
features tell a linear model which labels to flip, and one version fitted
both by day 2). With it, ``retrain-on-concept-drift`` has its case every
second day. Every
decision and action is sent to a webhook on loopback (one Apprise ``json://``
channel), so the notification outbox is used too. Retention runs from the
tick with its defaults (7 days raw, 1-hour buckets, a pass every hour).

Sampled every ``sample_every`` ticks: the tick number and logical time, the
process's resident memory (``VmRSS``) and Python's heap (allocated blocks and
objects tracked by the collector), the knowledge base's size in bytes (SQLite:
the file, its WAL and shared memory, and the free pages inside the file;
PostgreSQL: ``pg_database_size``), rows per table with raw and bucket
observations apart, and the interval's tick wall times (median, p95, max) and
stage means. The growth figure is ``(RSS at the last sample - RSS at the
warm-up sample) / RSS at the warm-up sample``, in percent (goal: under 10 %).
At the warm-up sample and at the end the collector's objects are counted by
type, and the types that grew most are reported.

Where resident memory goes, at each sample (:func:`native_memory`): SQLite's
heap (``sqlite3_memory_used``: the page caches of the pooled connections),
Arrow's pool (the file sources' table caches), and RSS once glibc has given
its free pages back (``malloc_trim``). The first 10,000-tick run grew 14 %
after the warm-up with no Python objects to show for it: SQLite's page cache,
64 MiB per pooled connection then, was caching the knowledge base as it grew
(0.9 MB a day of kept decisions, audit and hourly buckets). Both caches are
bounded (``Settings.sqlite_cache_mib``, now for all connections together and
16 MiB by default, and each source's ``cache_bytes``); ``rest_mib`` is what
neither accounts for, the figure that shows a leak if there is one.
``--sqlite-cache-mib`` runs the soak with another bound.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import gc
import http.server
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402
from sqlmodel import SQLModel  # noqa: E402

from benchmarks.machine import describe, write_results  # noqa: E402
from benchmarks.scratch_postgres import scratch_database  # noqa: E402
from examples.credit.serving import FEATURES, CreditServing  # noqa: E402
from examples.credit.stream import CATEGORICAL, NUMERIC, generate  # noqa: E402
from knowledge import registry  # noqa: E402
from knowledge.database import DEFAULT_SQLITE_CACHE_MIB, create_engine_for, session_scope  # noqa: E402
from knowledge.migrate import upgrade  # noqa: E402
from knowledge.tables import Observation  # noqa: E402
from mape._util.heap import settle_heap  # noqa: E402
from mape.config import ModelConfig, Settings  # noqa: E402
from mape.controller import Controller  # noqa: E402
from mape.execute.training import TrainingRequest, run_entrypoint, save_artifact  # noqa: E402

START = datetime(2026, 10, 1, tzinfo=timezone.utc)
TICK = timedelta(minutes=5)
ENTRYPOINT = "examples.credit.model:train"
POLICIES = Path(__file__).resolve().parent.parent / "policies"
#: Tables whose rows retention must never delete (counts may only grow).
KEPT_TABLES = ("decision", "action_run", "audit_event", "model_version", "policy_version", "symptom")


class Fleet:
    """The soak's models: each a credit model served from the knowledge base's production version.

    Parameters
    ----------
    root : Path
        Directory of the logs and artifacts (one subdirectory per model).
    engine : Engine
        The knowledge base (migrated); the models are registered by :meth:`bootstrap`.
    n_models : int
        Models in the fleet, named ``credit-0``, ``credit-1``, ...
    rows_per_hour : int
        Requests per hour and model; a tick's part holds a twelfth.
    cycle, drift_for : timedelta
        Each model drifts for ``drift_for`` once per ``cycle``, the models'
        episodes spread evenly over the cycle, the first starting 6 hours in.
    invert_every : int or None
        Every ``invert_every``-th episode (counting from 0: episodes 1, 3, ...
        for 2) keeps the population and inverts its labels; ``None``: never.
    log_days : int
        Days of parts the log keeps; older day directories are deleted.
    """

    def __init__(self, root: Path, engine: Engine, n_models: int, *, rows_per_hour: int = 600,
                 cycle: timedelta = timedelta(hours=24), drift_for: timedelta = timedelta(hours=8),
                 invert_every: int | None = 2, log_days: int = 2, seed: int = 11) -> None:
        if rows_per_hour % 12:
            raise ValueError(f"rows_per_hour must be a multiple of 12 (a part every 5 minutes); got {rows_per_hour}")
        self.root, self.engine = root, engine
        self.names = [f"credit-{m}" for m in range(n_models)]
        self.rows_per_hour, self.cycle, self.drift_for, self.log_days = rows_per_hour, cycle, drift_for, log_days
        self.invert_every = invert_every
        self.servings = [CreditServing(root / name / "data", engine, name, rows_per_hour=rows_per_hour, seed=seed + m)
                         for m, name in enumerate(self.names)]
        self._rngs = [np.random.default_rng(seed + 100 + m) for m in range(n_models)]
        self._ids = [0] * n_models
        self.drifted_parts = 0
        self.inverted_parts = 0

    def configs(self) -> list[ModelConfig]:
        """The models' configurations (the credit demo's, with this fleet's paths)."""
        return [ModelConfig.model_validate({
            "name": name, "owner": "risk-ml@example.com", "labels": {"team": "risk"},
            "features": {"numeric": NUMERIC, "categorical": CATEGORICAL},
            "inference": {"kind": "parquet", "path": str(serving.data_dir / "inference"),
                          "timestamp_column": "timestamp", "id_column": "request_id"},
            "labels_source": {"kind": "parquet", "path": str(serving.data_dir / "labels"),
                              "timestamp_column": "labelled_at", "id_column": "request_id"},
            "prediction_column": "prediction", "version_column": "model_version", "label_column": "label",
            "training": {"entrypoint": ENTRYPOINT},
            "drift": {"window": "1h", "alpha": 0.05},
            "performance": {"window": "2h", "min_samples": min(500, self.rows_per_hour * 3 // 4)},
            "promotion": {"evaluation_window": "1h", "margin": 0.0, "min_samples": min(200, self.rows_per_hour // 3)},
        }) for name, serving in zip(self.names, self.servings)]

    def bootstrap(self, artifacts: Path) -> None:
        """Train version 1 of every model on a day of history before :data:`START`, promote it, serve the history."""
        for name, serving in zip(self.names, self.servings):
            history = serving.requests(START - timedelta(hours=24), drifted=False, hours=24)
            cut = START - timedelta(hours=4)
            train = history[history["timestamp"] < cut].reset_index(drop=True)
            trained = run_entrypoint(ENTRYPOINT, TrainingRequest(
                model_name=name, data=train, features=FEATURES, numeric=NUMERIC, categorical=CATEGORICAL,
                window_start=train["timestamp"].min(), window_end=cut))
            holdout = history[history["timestamp"] >= cut]
            accuracy = float(trained.estimator.score(holdout[FEATURES], holdout["label"]))
            uri = save_artifact(trained.estimator, artifacts / name / "bootstrap")
            with session_scope(self.engine) as session:
                model = registry.get_model(session, name)
                version = registry.register_version(
                    session, model_id=model.id, artifact_uri=uri, metrics={"accuracy": accuracy, **trained.metrics},
                    training_window=(START - timedelta(hours=24), cut), actor="soak-bootstrap")
                registry.promote(session, version, actor="soak-bootstrap", reason="initial version", at=START)
            serving.serve("history", history)

    def drifted(self, m: int, at: datetime) -> bool:
        """Whether model ``m``'s population is drifted at ``at`` (an hour of an episode that is no concept change)."""
        episode = self._episode(m, at)
        return episode is not None and not self._concept(episode)

    def inverted(self, m: int, at: datetime) -> bool:
        """Whether model ``m``'s labels are inverted at ``at`` (an hour of every ``invert_every``-th episode)."""
        episode = self._episode(m, at)
        return episode is not None and self._concept(episode)

    def _episode(self, m: int, at: datetime) -> int | None:
        """The number of the episode of model ``m`` that ``at`` falls in (0, 1, ...), or None between episodes."""
        since = at - START - self._offset(m)
        if since < timedelta(0) or since % self.cycle >= self.drift_for:
            return None
        return since // self.cycle

    def _concept(self, episode: int) -> bool:
        return self.invert_every is not None and episode % self.invert_every == self.invert_every - 1

    def _offset(self, m: int) -> timedelta:
        return timedelta(hours=6) + self.cycle * m / len(self.names)

    def arrive(self, at: datetime) -> None:
        """Serve and log the five minutes ending at ``at`` for every model; rotate the logs at midnight."""
        start = at - TICK
        n = self.rows_per_hour // 12
        day = f"{start:%Y-%m-%d}"
        for m, serving in enumerate(self.servings):
            drifted = self.drifted(m, start)
            self.drifted_parts += drifted
            rng = self._rngs[m]
            batch = generate(n, drifted=drifted, rng=rng)
            if self.inverted(m, start):
                batch["label"] = 1 - batch["label"]
                self.inverted_parts += 1
            offsets = np.sort(rng.uniform(0, TICK.total_seconds(), size=n))
            batch.insert(0, "timestamp", pd.to_datetime(start) + pd.to_timedelta(offsets, unit="s"))
            batch.insert(0, "request_id", [f"r{self._ids[m] + i:09d}" for i in range(n)])
            self._ids[m] += n
            for kind in ("inference", "labels"):
                (serving.data_dir / kind / day).mkdir(exist_ok=True)
            serving.serve(f"{day}/part-{start:%H%M}", batch)
        if at.hour == 0 and at.minute == 0:
            self.rotate(at)

    def rotate(self, at: datetime) -> None:
        """Delete the day directories of the logs older than ``log_days`` days."""
        oldest = f"{at - timedelta(days=self.log_days):%Y-%m-%d}"
        for serving in self.servings:
            for kind in ("inference", "labels"):
                for directory in (serving.data_dir / kind).iterdir():
                    if directory.is_dir() and directory.name < oldest:
                        shutil.rmtree(directory)


class _Hook(http.server.BaseHTTPRequestHandler):
    """Accepts every POST (Apprise's ``json://``) and counts it."""

    received = 0

    def do_POST(self) -> None:  # noqa: N802 - the handler's name is http.server's
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received += 1
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        """Write nothing: 10,000 ticks of notifications would drown the soak's own output."""


@contextmanager
def _webhook() -> Iterator[tuple[str, type[_Hook]]]:
    """A webhook on loopback for the run; its ``json://`` URL and the handler class that counts the posts."""
    handler = type("Hook", (_Hook,), {"received": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"json://127.0.0.1:{server.server_address[1]}/hook", handler
    finally:
        server.shutdown()
        server.server_close()


def rss_bytes() -> int:
    """This process's resident memory now (``VmRSS``), in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmRSS line")


def _native(name: str) -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


_LIBC = _native("libc.so.6")
_SQLITE = _native("libsqlite3.so.0")  # the library Python's sqlite3 module links to (the same handle)
if _SQLITE is not None:
    _SQLITE.sqlite3_memory_used.restype = ctypes.c_int64


def native_memory() -> dict[str, float | None]:
    """Where resident memory lives, in MiB: SQLite's heap, Arrow's pool, and RSS before and after ``malloc_trim``.

    ``sqlite_mib`` is ``sqlite3_memory_used()`` (page caches of every pooled
    connection, statements, schemas); ``arrow_mib`` is
    ``pyarrow.total_allocated_bytes()``; ``rss_trimmed_mib`` is the resident
    memory once glibc has returned its free pages to the system
    (``malloc_trim(0)``), so ``rss_mib - rss_trimmed_mib`` is memory the
    allocator held but nothing used. Trimming at each sample changes later
    samples' RSS a little (freed pages are not kept), never what is in use.
    """
    import pyarrow as pa

    before = rss_bytes()
    trimmed = None
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
        trimmed = round(rss_bytes() / 2**20, 1)
    return {"rss_mib": round(before / 2**20, 1), "rss_trimmed_mib": trimmed,
            "sqlite_mib": None if _SQLITE is None else round(_SQLITE.sqlite3_memory_used() / 2**20, 1),
            "arrow_mib": round(pa.total_allocated_bytes() / 2**20, 1)}


def kb_size(engine: Engine, url: str) -> dict[str, int]:
    """The knowledge base's size: SQLite's file + WAL + shared memory (and free pages); PostgreSQL's database."""
    if engine.dialect.name == "sqlite":
        path = Path(url.removeprefix("sqlite:///"))
        sizes = {suffix or "file": (path.with_name(path.name + suffix).stat().st_size
                                    if path.with_name(path.name + suffix).exists() else 0)
                 for suffix in ("", "-wal", "-shm")}
        with engine.connect() as conn:
            free = conn.exec_driver_sql("PRAGMA freelist_count").scalar_one() * \
                conn.exec_driver_sql("PRAGMA page_size").scalar_one()
        return {"bytes": sum(sizes.values()), "file_bytes": sizes["file"], "wal_bytes": sizes["-wal"],
                "free_bytes": int(free)}
    with engine.connect() as conn:
        return {"bytes": int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one())}


def row_counts(engine: Engine) -> dict[str, int]:
    """Rows in every table, and the observations split into raw rows and bucket rows (``samples`` set)."""
    with session_scope(engine) as session:
        counts = {name: session.execute(select(func.count()).select_from(table)).scalar_one()
                  for name, table in sorted(SQLModel.metadata.tables.items())}
        counts["observation.raw"] = session.execute(
            select(func.count()).select_from(Observation).where(Observation.samples.is_(None))).scalar_one()  # type: ignore[union-attr]
    counts["observation.bucket"] = counts["observation"] - counts["observation.raw"]
    return counts


def _type_counts() -> collections.Counter[str]:
    """Objects the collector tracks (outside the frozen start-up heap), by module-qualified type."""
    return collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


def growth_percent(warm: float, end: float) -> float:
    """``(end - warm) / warm`` in percent, rounded to 0.1: the report's growth figure."""
    return round(100.0 * (end - warm) / warm, 1)


def _slope_per_day(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (day, value) points; None with fewer than three."""
    if len(points) < 3:
        return None
    days, values = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    return float(np.polyfit(days, values, 1)[0])


def soak(url: str, root: Path, *, ticks: int = 10_000, models: int = 3, rows_per_hour: int = 600,
         sample_every: int = 100, warmup: int = 1000, retention: dict[str, Any] | None = None,
         cycle: timedelta = timedelta(hours=24), drift_for: timedelta = timedelta(hours=8),
         invert_every: int | None = 2, use_tracemalloc: bool = False, sqlite_cache_mib: int = DEFAULT_SQLITE_CACHE_MIB,
         echo: Callable[[str], Any] = lambda line: None) -> dict[str, Any]:
    """Run ``ticks`` ticks of a fleet of ``models`` over the knowledge base at ``url``; the series and the summary.

    Parameters
    ----------
    url : str
        A reachable database (SQLite file or PostgreSQL), empty or migrated; migrated here.
    root : Path
        Directory for the logs, artifacts and serving state.
    ticks, sample_every, warmup : int
        Ticks run, ticks between samples, and the tick whose sample is the
        baseline of the growth figures (a multiple of ``sample_every``).
    retention : dict, optional
        The ``retention`` settings (``RetentionConfig``); none: its defaults.
    cycle, drift_for, invert_every
        The drift episodes, and which of them invert the labels (:class:`Fleet`).
    use_tracemalloc : bool
        Trace allocations from the warm-up sample on and report the lines
        whose allocations grew most by the end (slows the ticks down).
    sqlite_cache_mib : int
        ``Settings.sqlite_cache_mib``: the bound of SQLite's memory in this process.

    Returns
    -------
    dict
        ``series`` (one record per sample) and the summary figures.
    """
    if warmup % sample_every or not 0 < warmup < ticks:
        raise ValueError(f"warmup must be a multiple of sample_every inside (0, ticks); got {warmup}")
    upgrade(url)
    engine = create_engine_for(url, sqlite_cache_mib=sqlite_cache_mib)
    fleet = Fleet(root, engine, models, rows_per_hour=rows_per_hour, cycle=cycle, drift_for=drift_for,
                  invert_every=invert_every)
    series: list[dict[str, Any]] = []
    with _webhook() as (hook_url, hook):
        settings = Settings(db_url=url, policies_dir=POLICIES, artifacts_dir=root / "artifacts",
                            serving_dir=root / "serving", models=fleet.configs(), controller_id="soak",
                            sqlite_cache_mib=sqlite_cache_mib,
                            retention=retention or {}, notifications={"channels": {"ops": {"urls": [hook_url], "events": [
                                "decision", "awaiting_approval", "approval_expired", "escalation", "action_failed",
                                "verification_failed", "notify"]}}})
        now = [START]
        controller = Controller(settings, clock=lambda: now[0], engine=engine)
        fleet.bootstrap(root / "artifacts")
        settle_heap()  # what flows.controllers does once the controller is built
        walls: list[float] = []
        stages: collections.Counter[str] = collections.Counter()
        errors: collections.Counter[str] = collections.Counter()
        warnings: collections.Counter[str] = collections.Counter()
        events: collections.Counter[str] = collections.Counter()
        first_seen: dict[str, str] = {}  # the first error or warning of each kind, in full
        types_warm: collections.Counter[str] | None = None
        snapshot_warm: tracemalloc.Snapshot | None = None
        began = time.perf_counter()

        def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
            def timed(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    stages[name] += time.perf_counter() - start
            return timed

        try:
            for k in range(1, ticks + 1):
                at = START + k * TICK
                fleet.arrive(at)
                now[0] = at
                start = time.perf_counter()
                report = controller.tick(at, wrap=wrap)
                walls.append(time.perf_counter() - start)
                for problems, texts in ((errors, report.errors), (warnings, report.warnings)):
                    for problem in texts:
                        problems[problem.split(":")[0]] += 1
                        first_seen.setdefault(problem.split(":")[0], f"tick {k}: {problem}")
                events.update(f"decision.{d.action}.{d.status}" for d in report.decisions)
                events.update(f"action.{a.action}.{a.state}" for a in report.actions)
                if report.retention is not None:
                    events["retention.pass"] += 1
                if k % sample_every:
                    continue
                series.append(_sample(k, at, engine, url, walls, stages, hook.received))
                walls.clear()
                stages.clear()
                if k == warmup:
                    types_warm = _type_counts()
                    if use_tracemalloc:
                        tracemalloc.start(1)
                        snapshot_warm = tracemalloc.take_snapshot()
                last = series[-1]
                echo(f"tick {k:6d} day {last['day']:5.1f}  rss {last['rss_mib']:7.1f} MiB (trimmed {last['rss_trimmed_mib']}, "
                     f"sqlite {last['sqlite_mib']}, arrow {last['arrow_mib']})  kb "
                     f"{last['kb']['bytes'] / 2**20:7.1f} MiB  observations {last['rows']['observation']:8d} "
                     f"(raw {last['rows']['observation.raw']})  tick {last['tick_median_s'] * 1000:6.1f} ms")
            elapsed = time.perf_counter() - began
            types_end = _type_counts()
            top_lines = None
            if snapshot_warm is not None:
                stats = tracemalloc.take_snapshot().compare_to(snapshot_warm, "lineno")
                tracemalloc.stop()
                top_lines = [{"where": str(s.traceback), "size_diff_bytes": s.size_diff, "count_diff": s.count_diff}
                             for s in stats[:20]]
        finally:
            controller.engine.dispose()
        received = hook.received
    return _summary(series, warmup=warmup, ticks=ticks, models=models, rows_per_hour=rows_per_hour,
                    elapsed=elapsed, settings=settings, fleet=fleet, errors=errors, warnings=warnings, events=events,
                    received=received, first_seen=first_seen, types=(types_warm, types_end), top_lines=top_lines,
                    artifacts_bytes=_tree_bytes(root / "artifacts"))


def _sample(k: int, at: datetime, engine: Engine, url: str, walls: list[float], stages: dict[str, float],
            notifications: int) -> dict[str, Any]:
    """One record of the series, taken after tick ``k`` (its own cost is not in any tick's time)."""
    ordered = sorted(walls)
    return {
        "tick": k, "at": at.isoformat(), "day": round((at - START) / timedelta(days=1), 3),
        **native_memory(),
        "heap_blocks": sys.getallocatedblocks(), "gc_objects": len(gc.get_objects()),
        "kb": kb_size(engine, url), "rows": row_counts(engine),
        "tick_median_s": round(statistics.median(walls), 4),
        "tick_p95_s": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 4),
        "tick_max_s": round(ordered[-1], 4),
        "stage_mean_s": {name: round(total / len(walls), 4) for name, total in sorted(stages.items())},
        "notifications_received": notifications,
    }


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def _summary(series: list[dict[str, Any]], *, warmup: int, ticks: int, models: int, rows_per_hour: int,
             elapsed: float, settings: Settings, fleet: Fleet, errors: collections.Counter[str],
             warnings: collections.Counter[str], events: collections.Counter[str], received: int,
             first_seen: dict[str, str],
             types: tuple[collections.Counter[str] | None, collections.Counter[str]],
             top_lines: list[dict[str, Any]] | None, artifacts_bytes: int) -> dict[str, Any]:
    warm = next(s for s in series if s["tick"] == warmup)
    end = series[-1]
    after = [s for s in series if s["tick"] >= warmup]
    raw_for = settings.retention.raw_for
    full = [s for s in series if s["day"] >= (raw_for + timedelta(days=1)) / timedelta(days=1)]
    kept = {table: all(a["rows"][table] <= b["rows"][table] for a, b in zip(series, series[1:]))
            for table in KEPT_TABLES}
    types_warm, types_end = types
    grown = [] if types_warm is None else [
        {"type": name, "warm": types_warm.get(name, 0), "end": types_end[name],
         "per_1000_ticks": round(1000 * more / (end["tick"] - warmup), 2)}
        for name, more in (types_end - types_warm).most_common(15)]
    return {
        "ticks": ticks, "models": models, "features": len(FEATURES), "rows_per_hour": rows_per_hour,
        "rows_per_tick_part": rows_per_hour // 12, "tick_logical_s": TICK.total_seconds(),
        "logical_days": round(ticks * TICK / timedelta(days=1), 2),
        "retention": settings.retention.model_dump(mode="json"),
        "drift": {"cycle": str(fleet.cycle), "drift_for": str(fleet.drift_for), "drifted_parts": fleet.drifted_parts,
                  "invert_every": fleet.invert_every, "inverted_parts": fleet.inverted_parts},
        "log_days_kept": fleet.log_days,
        "wall_s": round(elapsed, 1), "ticks_per_s": round(ticks / elapsed, 2),
        "warmup_tick": warmup,
        "rss": {"warm_mib": warm["rss_mib"], "end_mib": end["rss_mib"],
                "max_after_warmup_mib": max(s["rss_mib"] for s in after),
                "growth_percent": growth_percent(warm["rss_mib"], end["rss_mib"]),
                "slope_mib_per_1000_ticks": round(1000 * (_slope_per_day([(s["tick"], s["rss_mib"]) for s in after])
                                                          or 0.0), 2),
                "goal_percent": 10.0,
                # where it went: SQLite's memory (bounded by sqlite_cache_mib), Arrow's pool (the sources' table
                # caches, bounded by their cache_bytes), what malloc_trim gave back, and the rest
                "breakdown_mib": {name: {"warm": warm.get(name), "end": end.get(name)}
                                  for name in ("rss_trimmed_mib", "sqlite_mib", "arrow_mib")},
                "rest_mib": {"warm": _rest(warm), "end": _rest(end)},
                "rest_growth_percent": (None if _rest(warm) is None or _rest(end) is None
                                        else growth_percent(_rest(warm), _rest(end))),
                "sqlite_cache_mib": settings.sqlite_cache_mib},
        "heap": {"blocks_warm": warm["heap_blocks"], "blocks_end": end["heap_blocks"],
                 "blocks_growth_percent": growth_percent(warm["heap_blocks"], end["heap_blocks"]),
                 "gc_objects_warm": warm["gc_objects"], "gc_objects_end": end["gc_objects"],
                 "types_grown_most": grown, "tracemalloc_top_lines": top_lines},
        "kb": {"warm_bytes": warm["kb"]["bytes"], "end_bytes": end["kb"]["bytes"],
               "max_bytes": max(s["kb"]["bytes"] for s in series),
               "raw_window_full_from_day": round((raw_for + timedelta(days=1)) / timedelta(days=1), 1),
               "slope_bytes_per_day_once_full": _round(_slope_per_day([(s["day"], s["kb"]["bytes"]) for s in full])),
               "observations_slope_per_day_once_full": _round(_slope_per_day(
                   [(s["day"], s["rows"]["observation"]) for s in full])),
               "raw_observations_slope_per_day_once_full": _round(_slope_per_day(
                   [(s["day"], s["rows"]["observation.raw"]) for s in full])),
               "bucket_observations_slope_per_day_once_full": _round(_slope_per_day(
                   [(s["day"], s["rows"]["observation.bucket"]) for s in full]))},
        "rows_end": end["rows"],
        "kept_tables_never_shrank": kept,
        "artifacts_bytes_end": artifacts_bytes,
        "tick_s": {"first_interval_median": series[0]["tick_median_s"], "warm_interval_median": warm["tick_median_s"],
                   "last_interval_median": end["tick_median_s"],
                   "max": max(s["tick_max_s"] for s in series),
                   "median_slope_ms_per_day_after_warmup": _round(_slope_per_day(
                       [(s["day"], 1000 * s["tick_median_s"]) for s in after]), 3)},
        "events": dict(sorted(events.items())), "notifications_received": received,
        "errors": dict(errors), "warnings": dict(warnings), "first_of_each_kind": first_seen,
        "series": series,
    }


def _rest(sample: dict[str, Any]) -> float | None:
    """Resident memory once trimmed, less SQLite's and Arrow's (the memory no bounded cache accounts for), in MiB."""
    if sample.get("rss_trimmed_mib") is None or sample.get("sqlite_mib") is None:
        return None
    return round(sample["rss_trimmed_mib"] - sample["sqlite_mib"] - sample["arrow_mib"], 1)


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--ticks", type=int, default=10_000, help="ticks to run (default 10000: 34.7 days)")
    parser.add_argument("--models", type=int, default=1, help="models in the fleet (default 1)")
    parser.add_argument("--rows-per-hour", type=int, default=600, help="requests per hour and model (default 600)")
    parser.add_argument("--warmup", type=int, default=1000, help="the growth figures' baseline tick (default 1000)")
    parser.add_argument("--invert-every", type=int, default=2,
                        help="invert the labels of every N-th drift episode (default 2; 0: never)")
    parser.add_argument("--tracemalloc", action="store_true", help="trace allocations after the warm-up (slower)")
    parser.add_argument("--sqlite-cache-mib", type=int, default=DEFAULT_SQLITE_CACHE_MIB,
                        help=f"Settings.sqlite_cache_mib (default {DEFAULT_SQLITE_CACHE_MIB})")
    parser.add_argument("--postgres", action="store_true", help="a fresh PostgreSQL database instead of SQLite")
    parser.add_argument("--results", default="soak", help="results file name in benchmarks/results (default soak)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    results: dict[str, Any] = {"machine": describe(), "runs": "in-process Controller.tick, no Prefect",
                               "policies": sorted(p.name for p in POLICIES.glob("*.yaml")
                                                  if not p.name.endswith(".test.yaml"))}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        common = dict(ticks=args.ticks, models=args.models, rows_per_hour=args.rows_per_hour, warmup=args.warmup,
                      invert_every=args.invert_every or None, use_tracemalloc=args.tracemalloc,
                      sqlite_cache_mib=args.sqlite_cache_mib,
                      echo=lambda line: print(line, flush=True))
        if args.postgres:
            with scratch_database("mape_bench_soak") as url:
                results["postgresql"] = soak(url, root, **common)  # type: ignore[arg-type]
        else:
            results["sqlite"] = soak(f"sqlite:///{root / 'mape.db'}", root, **common)  # type: ignore[arg-type]
    write_results(args.results, results)


if __name__ == "__main__":
    main()
