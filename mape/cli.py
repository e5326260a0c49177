"""The ``mape`` command line (typer): run the loop, inspect the knowledge base, check policies.

Every command takes ``--config`` (default ``$MAPE_CONFIG`` or ``./mape.yaml``).
Errors in input (configuration, policy files) print one clear line naming the
file and field, and exit with status 2; they never print a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from mape.errors import ConfigError, MapeError  # noqa: E402

app = typer.Typer(help="mape: a self-adaptive MAPE-K control loop for ML operations.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
db_app = typer.Typer(help="The knowledge base's schema.", no_args_is_help=True)
policy_app = typer.Typer(help="Policy files: check them before they go live.", no_args_is_help=True)
models_app = typer.Typer(help="Managed models and their versions.", no_args_is_help=True)
actions_app = typer.Typer(help="Action types, and actions asked for by a person outside any policy.",
                          no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(policy_app, name="policy")
app.add_typer(models_app, name="models")
app.add_typer(actions_app, name="actions")
carbon_app = typer.Typer(help="Carbon-aware scheduling: the best window for a job, and backtests over a year.",
                         no_args_is_help=True)
app.add_typer(carbon_app, name="carbon")

from mape.cli_options import ConfigOption, LocalActorOption, UserOption  # noqa: E402


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _settings(config: Path | None):  # type: ignore[no-untyped-def]
    from mape.config import load_settings

    try:
        return load_settings(config)
    except ConfigError as exc:
        _fail(str(exc))


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "httpcore", "uvicorn", "docket", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _apply_prefect_settings(settings) -> None:  # type: ignore[no-untyped-def]
    """Export the Prefect settings of our configuration before Prefect is imported."""
    if settings.prefect.telemetry:
        os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "true"
    if settings.prefect.api_url:
        os.environ.setdefault("PREFECT_API_URL", settings.prefect.api_url)
    if settings.prefect.home:
        os.environ.setdefault("PREFECT_HOME", str(settings.prefect.home))


# ---------------------------------------------------------------------------------------------- db


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Bring the knowledge base to the current schema (Alembic)."""
    from knowledge.migrate import current_revision, upgrade

    settings = _settings(config)
    upgrade(settings.db_url)
    typer.echo(f"knowledge base at {settings.db_url} is at revision {current_revision(settings.db_url)}")


@db_app.command("current")
def db_current(config: ConfigOption = None) -> None:
    """Print the knowledge base's schema revision and whether it is current."""
    from knowledge.migrate import current_revision, head_revision

    settings = _settings(config)
    current, head = current_revision(settings.db_url), head_revision()
    typer.echo(f"current: {current or 'none'}; head: {head}; {'up to date' if current == head else 'needs upgrade'}")


@db_app.command("prune")
def db_prune(config: ConfigOption = None,
             dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what a pass would do; change nothing.")]
             = False,
             vacuum: Annotated[bool, typer.Option("--vacuum", help="Then give the freed space back to the file system "
                                                  "(SQLite VACUUM: locks out every writer while it rewrites the file; "
                                                  "PostgreSQL VACUUM of the two tables).")] = False) -> None:
    """Run the retention pass now (``retention`` settings) and print its report as JSON."""
    import time as _time

    from knowledge import retention
    from knowledge.database import create_engine_for
    from knowledge.migrate import upgrade
    from mape._util.timeutil import utcnow

    settings = _settings(config)
    upgrade(settings.db_url)
    engine = create_engine_for(settings.db_url)
    policy = settings.retention
    try:
        args = dict(at=utcnow(), raw_for=policy.raw_for, bucket=policy.bucket, batch_rows=policy.batch_rows)
        if dry_run:
            report = retention.thin(engine, dry_run=True, **args)
        else:
            report = retention.run_pass(engine, claimed_by=f"{settings.controller_id} (mape db prune)", force=True,
                                        **args)
            assert report is not None
        result: dict[str, Any] = report.model_dump(mode="json")
        if vacuum and not dry_run:
            started = _time.monotonic()
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                if engine.dialect.name == "sqlite":
                    connection.exec_driver_sql("VACUUM")
                else:
                    retention.vacuum_tables(connection, ["observation", "tick"])
                result["vacuum_seconds"] = round(_time.monotonic() - started, 3)
                result["storage_after_vacuum"] = retention.storage(connection)
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        _fail(f"the retention pass failed: {type(exc).__name__}: {exc}", code=1)
    finally:
        engine.dispose()
    typer.echo(json.dumps(result, indent=2))


# ---------------------------------------------------------------------------------------------- loop


@app.command()
def tick(config: ConfigOption = None,
         at: Annotated[Optional[datetime], typer.Option(help="Logical time of the tick (UTC); default now.")] = None,
         verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Run one iteration of the loop as one Prefect flow run and print its report as JSON."""
    _logging(verbose)
    settings = _settings(config)
    _apply_prefect_settings(settings)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    from flows.tick import tick_flow

    report = tick_flow(config_file=str(settings.config_file) if settings.config_file else None, at=at)
    typer.echo(json.dumps(report, indent=2, default=str))


@app.command()
def run(config: ConfigOption = None, verbose: Annotated[bool, typer.Option("--verbose", "-v")] = True) -> None:
    """The long-running controller: serve the tick flow every ``tick_interval`` until SIGTERM."""
    _logging(verbose)
    settings = _settings(config)
    if settings.leases.enabled and "MAPE_CONTROLLER_ID" not in os.environ and not _configured_id(settings):
        # controllers sharing a fleet need names of their own; the tick processes inherit this one
        import socket

        os.environ["MAPE_CONTROLLER_ID"] = f"{settings.controller_id}@{socket.gethostname()}-{os.getpid()}"
        settings = _settings(config)
    _apply_prefect_settings(settings)
    from contextlib import nullcontext

    from flows.prefect_retention import vacuum_environment
    from flows.serve import local_prefect_server, serve

    keeper = _lease_keeper(settings) if settings.leases.enabled else None
    config_file = str(settings.config_file) if settings.config_file else None
    external = os.environ.get("PREFECT_API_URL")
    server = nullcontext(external) if external else local_prefect_server(
        port=settings.prefect.server_port, home=settings.prefect.home,
        environment=vacuum_environment(settings.retention))
    metrics = _metrics_loop(settings) if settings.metrics.enabled else None
    try:
        with server as api_url:
            os.environ["PREFECT_API_URL"] = api_url
            typer.echo(f"mape controller {settings.controller_id}: a tick every {settings.tick_interval}, "
                       f"Prefect API {api_url}; SIGTERM stops it")
            if settings.prefect.action_work_pool:  # the ticks hand their actions to this pool's workers
                from flows.workers import deploy

                deploy(settings.prefect.action_work_pool)
                typer.echo(f"actions run on the workers of work pool {settings.prefect.action_work_pool}")
            if metrics is not None:
                endpoint = metrics.start(settings.metrics.host, settings.metrics.port)
                typer.echo(f"metrics on {endpoint.url}")
            if keeper is not None:
                keeper.start()
                typer.echo(f"sharing the fleet through model leases: holds {len(keeper.last.held) if keeper.last else 0}"
                           f" of {len(settings.models)} models; renewed every {settings.leases.renew_every}")
            # each controller serves a deployment of its own name: controllers sharing a fleet each tick
            serve(config_file, interval=settings.tick_interval,
                  name=settings.controller_id if keeper is not None else "mape-controller")
    except (RuntimeError, OSError) as exc:
        _fail(str(exc), code=1)
    finally:
        if metrics is not None:
            metrics.stop()
        if keeper is not None:
            keeper.stop(leave=True)  # the others take the models at their next round, not after the leases expire
    typer.echo("mape controller stopped")


def _configured_id(settings: Any) -> bool:
    """Whether ``controller_id`` was set (in the file or the environment), not left at its default."""
    return "controller_id" in settings.model_fields_set


def _lease_keeper(settings: Any) -> Any:
    """The keeper of this controller's model leases (``leases.enabled``): renewed in this long-lived process."""
    from knowledge.database import create_engine_for
    from knowledge.migrate import upgrade
    from knowledge import registry
    from knowledge.database import session_scope
    from mape.fleet import LeaseKeeper

    upgrade(settings.db_url)
    engine = create_engine_for(settings.db_url)
    with session_scope(engine) as session:  # the fleet's models exist before the first tick registers them
        registry.sync_models(session, settings.models, actor=settings.controller_id)
    return LeaseKeeper(engine, settings)


def _metrics_loop(settings: Any) -> Any:
    """The `/metrics` of `mape run`: what the tick processes did, read from the knowledge base."""
    from flows.metrics import MetricsLoop
    from knowledge.database import create_engine_for
    from knowledge.migrate import upgrade
    from mape.execute import actions as builtin_actions  # noqa: F401 - registers the built-in actions
    from mape.execute.registry import default_registry
    from mape.plan.loader import load_policies

    upgrade(settings.db_url)
    default_registry.load_entry_points()
    known = default_registry.params_models()

    def policies() -> tuple[int, int]:  # read, not recorded: the tick processes record refusals
        result = load_policies(Path(settings.policies_dir), known_actions=known)
        return len(result.policies), len({e.source for e in result.errors})

    return MetricsLoop(create_engine_for(settings.db_url), policies, interval=settings.metrics.interval)


@app.command()
def demo(directory: Annotated[Path, typer.Option("--dir", help="Working directory of the demo (recreated).")] = Path(".mape-demo"),
         verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """The embedded end-to-end demo: drift, retrain, promotion, a rejected bad candidate."""
    _logging(verbose)
    from examples.credit.demo import run_demo

    ok = run_demo(directory.resolve(), echo=typer.echo)
    raise typer.Exit(0 if ok else 1)


@app.command()
def dashboard(config: ConfigOption = None,
              port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8501) -> None:
    """Open the governance dashboard (Streamlit) on the knowledge base."""
    import subprocess

    settings = _settings(config)
    app_file = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
    env = {**os.environ, "MAPE_DB_URL": settings.db_url, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    if config is not None:  # the page reads the same configuration (its users file, its knowledge base)
        env["MAPE_CONFIG"] = str(config.resolve())
    raise typer.Exit(subprocess.call([sys.executable, "-m", "streamlit", "run", str(app_file),
                                      "--server.address", "127.0.0.1", "--server.port", str(port),
                                      "--server.headless", "true"], env=env))


@app.command("drift")
def drift(
    reference: Annotated[Path, typer.Option("--reference", help="Reference data: a .csv or .parquet file.")],
    current: Annotated[Path, typer.Option("--current", help="Current data, with the reference's columns.")],
    categorical: Annotated[Optional[str], typer.Option(
        help="Comma-separated columns to test as categories; text, category and bool columns are anyway.")] = None,
    exclude: Annotated[Optional[str], typer.Option(help="Comma-separated columns not to test.")] = None,
    alpha: Annotated[float, typer.Option(help="False-discovery rate across columns (Benjamini-Hochberg).")] = 0.05,
    test: Annotated[str, typer.Option(help="Test of numeric columns: ks (Kolmogorov-Smirnov) or cvm "
                                           "(Cramér-von Mises).")] = "ks",
    min_samples: Annotated[int, typer.Option(help="Fewer rows than this in either file: no verdict.")] = 100,
    backend: Annotated[str, typer.Option(help="Who computes the tests: builtin (mape's) or alibi (alibi-detect's; "
                                              "pip install 'mape[alibi]').")] = "builtin",
) -> None:
    """Test every column of --current against --reference for drift and print the verdict as JSON.

    A column drifted when its shift is significant after the correction across columns and its effect size is at
    least the default floor (Wasserstein 0.1 reference standard deviations for numeric columns, Jensen-Shannon
    distance 0.05 for categorical ones). Exit 0 whatever the verdict; 2 for unreadable files or bad options.
    """
    import math

    import pandas as pd

    from mape.config import FeaturesConfig
    from mape.errors import InvalidParameterError
    from mape.monitor.sensors import DriftSensor

    def names(option: str, value: str | None) -> list[str]:
        return [name.strip() for name in (value or "").split(",") if name.strip()]

    if test not in ("ks", "cvm"):
        _fail(f"--test {test!r}: use ks or cvm")
    if backend not in ("builtin", "alibi"):
        _fail(f"--backend {backend!r}: use builtin or alibi")
    if backend == "alibi":
        import importlib.util

        if importlib.util.find_spec("alibi_detect") is None:
            _fail("--backend alibi: alibi-detect is not installed; pip install 'mape[alibi]'")
    try:  # the options, before reading large files
        DriftSensor(FeaturesConfig(), alpha=alpha, min_samples=min_samples, numeric_test=test,  # type: ignore[arg-type]
                    backend=backend)  # type: ignore[arg-type]
    except InvalidParameterError as exc:
        _fail(str(exc))
    frames: list[pd.DataFrame] = []
    for option, path in (("--reference", reference), ("--current", current)):
        suffixes = [s.lower() for s in path.suffixes]
        kind = "Parquet" if suffixes[-1:] in ([".parquet"], [".pq"]) else "CSV" if ".csv" in suffixes else None
        if kind is None:
            _fail(f"{option} file {path}: cannot tell its format from its name; use a .csv or .parquet file")
        if not path.is_file():
            _fail(f"{option} file {path} does not exist")
        try:
            frame = pd.read_parquet(path) if kind == "Parquet" else pd.read_csv(path)
        except Exception as exc:  # noqa: BLE001 - any reader error is the file's problem
            first_line = (str(exc) or "?").splitlines()[0]
            _fail(f"cannot read {option} file {path} as {kind}: {type(exc).__name__}: {first_line}")
        frames.append(frame.rename(columns=str))
    ref, cur = frames
    excluded, named_categorical = names("--exclude", exclude), names("--categorical", categorical)
    for option, listed in (("--exclude", excluded), ("--categorical", named_categorical)):
        unknown = [name for name in listed if name not in ref.columns and name not in cur.columns]
        if unknown:
            _fail(f"{option} names columns in neither file: {', '.join(map(repr, unknown))}")
    only_ref = [c for c in ref.columns if c not in cur.columns and c not in excluded]
    only_cur = [c for c in cur.columns if c not in ref.columns and c not in excluded]
    if only_ref or only_cur:
        sides = [f"{', '.join(map(repr, cols))} only in {path}"
                 for cols, path in ((only_ref, reference), (only_cur, current)) if cols]
        _fail(f"the files have different columns: {'; '.join(sides)} (leave a column out with --exclude)")
    numeric_columns: list[str] = []
    categorical_columns: list[str] = []
    skipped: list[str] = []
    for column in (c for c in ref.columns if c not in excluded):
        dtype = ref[column].dtype
        if column in named_categorical or pd.api.types.is_bool_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype) \
                or pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
            categorical_columns.append(column)
        elif pd.api.types.is_numeric_dtype(dtype):
            if not pd.api.types.is_numeric_dtype(cur[column].dtype):
                _fail(f"column {column!r} is numeric in {reference} but {cur[column].dtype} in {current}; "
                      "name it in --categorical to test it as categories")
            numeric_columns.append(column)
        else:
            skipped.append(f"{column!r} ({dtype})")
    if skipped:
        typer.echo(f"warning: not tested, neither numeric nor categorical: {', '.join(skipped)} "
                   "(name them in --categorical to test them as categories)", err=True)
    sensor = DriftSensor(FeaturesConfig(numeric=numeric_columns, categorical=categorical_columns), alpha=alpha,
                         min_samples=min_samples, numeric_test=test, backend=backend)  # type: ignore[arg-type]
    report = sensor.fit(ref).score(cur)

    def number(value: float | None) -> float | None:
        return None if value is None or not math.isfinite(value) else float(value)

    output: dict[str, Any] = {
        "features": [{"feature": f.feature, "test": f.test, "statistic": number(f.statistic),
                      "p_value": number(f.p_value), "q_value": number(f.q_value),
                      "effect_size": number(f.effect_size), "effect_name": f.effect_name,
                      "significant": f.significant, "drifted": f.drifted} for f in report.features],
        "drift": report.detected, "share_drifted": number(report.share_drifted),
        "n_reference": report.n_reference, "n_current": report.n_current,
    }
    if report.reason is not None:
        output["reason"] = report.reason
    typer.echo(json.dumps(output, indent=2, allow_nan=False))


@app.command("config")
def config_show(config: ConfigOption = None) -> None:
    """Print the effective configuration (file, environment and defaults) as JSON."""
    settings = _settings(config)
    typer.echo(settings.model_dump_json(indent=2))


# ---------------------------------------------------------------------------------------------- policy


def _action_registry():  # type: ignore[no-untyped-def]
    """The built-in actions and those of installed distributions (entry point group ``mape.actions``).

    A registry of the command's own, so the default one is left as it is; the
    entry points that failed are in its ``entry_point_failures``.
    """
    from mape.execute import actions as _actions  # noqa: F401  (registers the built-ins)
    from mape.execute.registry import default_registry

    registry = default_registry.copy()
    registry.load_entry_points()
    return registry


def _names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


@policy_app.command("validate")
def policy_validate(
    paths: Annotated[list[Path], typer.Argument(help="Policy files or directories.")],
    strict: Annotated[bool, typer.Option("--strict", help="Fail on warnings too: policies that can fight, "
                                                          "action plugins that fail to load.")] = False,
) -> None:
    """Check policy files: schema, CEL, context fields, actions and their params, policies that can fight.

    Each problem is one line, ``file:line:column: field: what is wrong``; policies that can fight are
    warnings (errors with --strict). The last line sums up. Exit 1 if any file is invalid.
    """
    from mape.plan.loader import load_policy_paths
    from mape.plan.overlap import CONFLICTING_ACTIONS, find_overlaps

    registry = _action_registry()
    result = load_policy_paths(paths, known_actions=registry.params_models())
    overlaps = find_overlaps(result.policies, conflicts=CONFLICTING_ACTIONS | registry.conflicting_pairs())
    label = "error" if strict else "warning"
    for failure in registry.entry_point_failures:
        typer.echo(f"{label}: {failure}", err=True)
    for error in result.errors:
        typer.echo(str(error), err=True)
    for overlap in overlaps:
        error = overlap.as_error()
        typer.echo(f"{error.location}: {label}: {error.field}: {error.message}", err=True)
    invalid = len({e.source for e in result.errors})
    warnings = len(overlaps) + len(registry.entry_point_failures)
    counts = f"{len(result.policies)} valid, {invalid} invalid, {warnings} warning{'' if warnings == 1 else 's'}"
    failed = bool(result.errors) or (strict and warnings > 0)
    if failed:
        typer.echo(f"failed: {counts}" + (" (errors under --strict)" if strict and warnings else ""))
    else:
        typer.echo(f"ok: {counts}" + (f": {_names([p.name for p in result.policies])}" if result.policies else ""))
    raise typer.Exit(1 if failed else 0)


@policy_app.command("test")
def policy_test(paths: Annotated[list[Path], typer.Argument(help="Policy test files (*.test.yaml) or directories.")],
                verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log the planner's decisions.")] = False,
                ) -> None:
    """Run policy unit tests through the real planner. Exit 1 if any test fails or any test file is invalid."""
    _logging(verbose)
    from mape.plan.testing import PolicyTestReport, run_policy_tests

    known = _action_registry().params_models()
    report = PolicyTestReport()
    for path in paths:
        report.extend(run_policy_tests(path, known_actions=known))
    for result in report.results:
        typer.echo(str(result))
    for error in report.errors:
        typer.echo(f"invalid: {error}", err=True)
    typer.echo(str(report))
    raise typer.Exit(0 if report.ok else 1)


@policy_app.command("explain")
def policy_explain(decision_id: Annotated[int, typer.Argument(help="The decision's id.")],
                   config: ConfigOption = None,
                   as_json: Annotated[bool, typer.Option("--json", help="Print the explanation as JSON.")] = False,
                   ) -> None:
    """Why a decision was taken or held back: policy version, conditions, evidence, status, action run."""
    from knowledge.database import create_engine_for, session_scope
    from mape.plan.explain import explain_decision

    settings = _settings(config)
    engine = create_engine_for(settings.db_url)
    try:
        with session_scope(engine) as session:
            explanation = explain_decision(session, decision_id)
    finally:
        engine.dispose()
    if explanation is None:
        _fail(f"no decision {decision_id} in the knowledge base at {settings.db_url}")
    assert explanation is not None
    typer.echo(json.dumps(explanation.as_dict(), indent=2) if as_json else str(explanation))


def _moment(option: str, value: str) -> datetime:
    from mape._util.timeutil import ensure_utc

    try:
        return ensure_utc(datetime.fromisoformat(value))
    except ValueError:
        _fail(f"{option} {value!r}: not a time; use ISO 8601, e.g. 2026-01-05T00:00:00Z")
        raise  # unreachable: _fail exits


@policy_app.command("simulate")
def policy_simulate(
    since: Annotated[Optional[str], typer.Option(
        "--since", help="Replay this far back from --to, e.g. 30d, 12h (default 30d).")] = None,
    start: Annotated[Optional[str], typer.Option("--from", help="First tick to replay (ISO 8601); instead of --since.")] = None,
    end: Annotated[Optional[str], typer.Option("--to", help="Last tick to replay (ISO 8601); default now.")] = None,
    policies: Annotated[Optional[Path], typer.Option(
        "--policies", help="The candidate policy directory; default: the configured policies_dir.")] = None,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    only_diff: Annotated[bool, typer.Option("--only-diff", help="Show only the decisions that differ.")] = False,
    workers: Annotated[Optional[int], typer.Option(
        "--workers", min=1, help="Processes to replay in; default: one per core for a large replay.")] = None,
) -> None:
    """Replay the recorded ticks through a candidate policy set; show what it would have decided, and the differences.

    Nothing is written. Each tick is planned with the live planner's rules over the knowledge base as it stood then.
    A recorded canary keeps its model busy as it did live; a candidate retrain's canary is described (its steps),
    not replayed: its steps are judged on a live candidate's own predictions.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from knowledge.database import create_engine_for, session_scope
    from knowledge.migrate import current_revision
    from knowledge.queries import models_by_name
    from mape._util.timeutil import parse_duration, utcnow
    from mape.plan.channels import check_channels
    from mape.plan.loader import load_policies
    from mape.plan.simulate import LEGEND, SimulatedTick, SimulationError, simulate

    if since is not None and start is not None:
        _fail("give --since or --from, not both")
    settings = _settings(config)
    directory = policies if policies is not None else Path(settings.policies_dir)
    loaded = check_channels(load_policies(directory, known_actions=_action_registry().params_models()),
                            settings.notifications.channels)
    if loaded.errors:
        for error in loaded.errors:
            typer.echo(str(error), err=True)
        refused = len({e.source for e in loaded.errors})
        _fail(f"{refused} policy file{'' if refused == 1 else 's'} of {directory} refused; nothing was simulated")
    finish = _moment("--to", end) if end is not None else utcnow()
    if start is not None:
        begin = _moment("--from", start)
    else:
        try:
            begin = finish - parse_duration(since or "30d")
        except ValueError as exc:
            _fail(f"--since {since!r}: {exc}")
    shown = settings.db_url
    if current_revision(settings.db_url) is None:
        _fail(f"the knowledge base at {shown} has no recorded ticks: nothing to replay (it has no tables yet)")
    started = False

    def show(tick: SimulatedTick) -> None:  # the table is printed as the replay goes, and not kept
        nonlocal started
        if not started:
            typer.echo(LEGEND)
            started = True
        for line in tick.lines(only_diff=only_diff):
            typer.echo(line)

    engine = create_engine_for(settings.db_url)
    try:
        with session_scope(engine) as session:
            stored = models_by_name(session)
        configured = [m.name for m in settings.models]
        models = [stored[name] for name in configured if name in stored] if configured else \
            sorted(stored.values(), key=lambda m: m.id or 0)
        report = simulate(engine, loaded.policies, start=begin, end=finish, models=models,
                          max_age=settings.effective_signal_max_age, blast_radius=settings.plan.blast_radius,
                          utility=settings.plan.utility, workers=workers,
                          keep=("diff" if only_diff else "all") if as_json else "none",
                          on_tick=None if as_json else show)
    except SimulationError as exc:
        _fail(str(exc))
    except SQLAlchemyError as exc:
        _fail(f"cannot read the knowledge base at {shown}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(report.as_dict(only_diff=only_diff), indent=2))
    else:
        typer.echo("" if started else LEGEND)
        for line in report.summary.lines():
            typer.echo(line)


@policy_app.command("schema")
def policy_schema() -> None:
    """Print the JSON Schema of the policy file format (the text of policies/policy.schema.json)."""
    from mape.plan.policy import policy_schema_text

    typer.echo(policy_schema_text(), nl=False)


# ---------------------------------------------------------------------------------------------- models


@models_app.command("list")
def models_list(config: ConfigOption = None) -> None:
    """Every managed model with its versions and their stages."""
    from knowledge import registry
    from knowledge.database import create_engine_for, session_scope
    from knowledge.queries import models_by_name

    settings = _settings(config)
    engine = create_engine_for(settings.db_url)
    with session_scope(engine) as session:
        for name, model in sorted(models_by_name(session).items()):
            typer.echo(f"{name} (owner {model.owner or '-'}, labels {model.labels})")
            for version in registry.versions(session, model.id):
                accuracy = version.metrics.get("accuracy")
                score = f" accuracy {accuracy:.3f}" if isinstance(accuracy, (int, float)) else ""
                gate = version.evaluation
                if gate.get("candidate") and gate.get("champion"):
                    metric = gate.get("metric", "accuracy")
                    score += (f" (gate: {gate['candidate'][metric]:.3f} vs production v{gate.get('champion_version')} "
                              f"{gate['champion'][metric]:.3f} on {gate.get('n')} rows)")
                typer.echo(f"  v{version.version} {version.stage}{score} {version.artifact_uri}")


def _managed_model(session, name: str):  # type: ignore[no-untyped-def]
    """The managed model ``name``, or exit 2 with the registry's message."""
    from knowledge import registry

    try:
        return registry.get_model(session, name)
    except registry.RegistryError as exc:
        _fail(str(exc))


def _version_record(session, version) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """A version with its lineage: the run and decision that produced it, its gate numbers and references."""
    from knowledge.references import references_of_version
    from knowledge.tables import ActionRun, ModelVersion

    run = session.get(ActionRun, version.created_by_action_run_id) if version.created_by_action_run_id else None
    parent = session.get(ModelVersion, version.parent_version_id) if version.parent_version_id else None
    return {
        "version": version.version, "stage": version.stage, "artifact_uri": version.artifact_uri,
        "training_window": [version.training_window_start, version.training_window_end],
        "created_at": version.created_at, "promoted_at": version.promoted_at, "retired_at": version.retired_at,
        "parent_version": parent.version if parent else None,
        "produced_by": None if run is None else {"action_run": run.id, "decision": run.decision_id,
                                                 "action": run.action, "state": run.state,
                                                 "verdict": run.verdict, "flow_run_id": run.flow_run_id},
        "metrics": version.metrics, "evaluation": version.evaluation,
        "references": [{"version": r.version, "kind": r.kind, "n_rows": r.n_rows, "taken_at": r.taken_at,
                        "window": [r.window_start, r.window_end]} for r in references_of_version(session, version.id)],
    }


@models_app.command("show")
def models_show(
    name: Annotated[str, typer.Argument(help="The managed model.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """One model with every version and its lineage: training window, metrics, gate numbers, the run that made it."""
    from knowledge import registry

    settings = _settings(config)
    with _knowledge_session(settings) as session:
        model = _managed_model(session, name)
        record = {"name": model.name, "owner": model.owner, "labels": model.labels,
                  "versions": [_version_record(session, v) for v in registry.versions(session, model.id)]}
    if as_json:
        typer.echo(json.dumps(record, indent=2, default=str))
        return
    typer.echo(f"{record['name']} (owner {record['owner'] or '-'}, labels {record['labels']})")
    for v in record["versions"]:
        start, end = v["training_window"]
        made = v["produced_by"]
        origin = (f"made by action run {made['action_run']} ({made['action']}, decision {made['decision']}, "
                  f"verdict {made['verdict'] or '-'})" if made else "registered outside the loop")
        typer.echo(f"  v{v['version']} {v['stage']}: {v['artifact_uri']}; trained on [{start}, {end}); {origin}")
        if v["evaluation"]:
            typer.echo(f"    gate: {v['evaluation'].get('reason', v['evaluation'])}")
        canary = (v["evaluation"] or {}).get("canary")
        if isinstance(canary, dict) and canary.get("outcome"):
            steps = ", ".join(f"{h['share']:.0%} {h['verdict']}" for h in canary.get("history") or [])
            typer.echo(f"    canary: {canary['outcome']}" + (f" (steps: {steps})" if steps else "")
                       + (f": {canary['reason']}" if canary.get("reason") else ""))
        for ref in v["references"][:3]:
            typer.echo(f"    reference {ref['version']} ({ref['kind']}, {ref['n_rows']} rows) taken at {ref['taken_at']}")


@models_app.command("promote")
def models_promote(
    name: Annotated[str, typer.Argument(help="The managed model.")],
    version: Annotated[int, typer.Argument(help="The version to put in production.")],
    reason: Annotated[str, typer.Option(help="Why; recorded in the audit trail.")],
    user: UserOption = None,
    actor: LocalActorOption = None,
    config: ConfigOption = None,
) -> None:
    """Put a version in production now (admin role; the previous one is archived); refused while an action runs for
    the model."""
    from sqlmodel import select

    from knowledge import registry
    from knowledge.queries import in_flight_actions
    from knowledge.tables import ModelVersion

    settings = _settings(config)
    actor = _admin(settings, user, actor, f"promote version {version} of model {name}")
    with _knowledge_session(settings) as session:
        model = _managed_model(session, name)
        row = session.exec(select(ModelVersion).where(ModelVersion.model_id == model.id,
                                                      ModelVersion.version == version)).first()
        if row is None:
            _fail(f"model {name} has no version {version}")
        if row.stage == "production":
            _fail(f"version {version} of model {name} is already in production")
        busy = in_flight_actions(session, model.id)
        if busy:
            _fail(f"model {name} has an action in flight ({busy[0]}); promote after it ends")
        registry.promote(session, row, actor=actor, reason=f"by hand: {reason}")
    typer.echo(f"{name}: version {version} is in production (promoted by {actor})")


@models_app.command("rollback")
def models_rollback(
    name: Annotated[str, typer.Argument(help="The managed model.")],
    reason: Annotated[str, typer.Option(help="Why; recorded with the decision.")],
    user: UserOption = None,
    actor: LocalActorOption = None,
    config: ConfigOption = None,
) -> None:
    """Roll back to the last good version (admin role): an approved rollback decision the next tick runs like any
    other."""
    from knowledge import registry

    settings = _settings(config)
    actor = _admin(settings, user, actor, f"roll back model {name}")
    with _knowledge_session(settings) as session:
        model = _managed_model(session, name)
        target = registry.rollback_target(session, model.id)
        if target is None:
            _fail(f"model {name} has no earlier good version to roll back to")
        to_version = target.version
    from mape.controller import Controller

    decision = Controller(settings).request_action(name, "rollback", actor=actor, reason=reason)
    typer.echo(f"decision {decision.id}: rollback of {name} to version {to_version} approved by {actor}; "
               "it runs at the next tick")


@models_app.command("references")
def models_references(
    name: Annotated[str, typer.Argument(help="The managed model.")],
    limit: Annotated[int, typer.Option(help="Show at most this many, newest first.")] = 20,
    config: ConfigOption = None,
) -> None:
    """The drift references a model's sensors compared with, newest first: version, kind, window, rows, why."""
    from knowledge.database import create_engine_for, session_scope
    from knowledge.references import reference_sample, references
    from knowledge.tables import ModelVersion

    settings = _settings(config)
    engine = create_engine_for(settings.db_url)
    with session_scope(engine) as session:
        model = _managed_model(session, name)
        assert model.id is not None
        rows = references(session, model.id, limit=limit)
        if not rows:
            typer.echo(f"{name}: no reference stored yet (the first tick with a production version takes one)")
        for row in rows:
            version = session.get(ModelVersion, row.model_version_id)
            window = (f"[{row.window_start.isoformat() if row.window_start else '-'}, "
                      f"{row.window_end.isoformat() if row.window_end else '-'})")
            stored = " sample stored" if row.kind == "reservoir" and reference_sample(session, row.id) else ""
            typer.echo(f"reference {row.version} ({row.kind}) of v{version.version if version else '?'} taken at "
                       f"{row.taken_at.isoformat()}: {row.n_rows} rows {window}{stored}; {row.reason}")


# ---------------------------------------------------------------------------------------------- actions


def _parse_params(items: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--param {item!r}: use key=value")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


@actions_app.command("list")
def actions_list(as_json: Annotated[bool, typer.Option("--json", help="Print the actions as JSON.")] = False) -> None:
    """Every action type policies can name, built-in or from an installed distribution, with its parameters.

    Exit 1 if an action plugin (entry point group mape.actions) failed to load; it is listed with its error.
    """
    registry = _action_registry()
    actions = [{
        "name": spec.name, "description": spec.description, "origin": registry.origin(spec.name),
        "retries": spec.retries, "timeout_seconds": spec.timeout.total_seconds() if spec.timeout else None,
        "conflicts": list(spec.conflicts), "params_schema": spec.params.model_json_schema(),
    } for spec in registry.specs()]
    failures = registry.entry_point_failures
    if as_json:
        typer.echo(json.dumps({"actions": actions, "failures": [f.as_dict() for f in failures]}, indent=2,
                              default=str))
    else:
        for entry in actions:
            typer.echo(f"{entry['name']}: {entry['description'] or '(no description)'} [{entry['origin']}]")
            typer.echo(f"  params: {json.dumps(entry['params_schema'], sort_keys=True, default=str)}")
        for failure in failures:
            typer.echo(f"error: {failure}", err=True)
    raise typer.Exit(1 if failures else 0)


@actions_app.command("request")
def actions_request(
    model: Annotated[str, typer.Argument(help="Managed model name.")],
    action: Annotated[str, typer.Argument(help="Action type, e.g. retrain or rollback.")],
    reason: Annotated[str, typer.Option(help="Why; recorded with the decision.")],
    user: UserOption = None,
    actor: LocalActorOption = None,
    param: Annotated[list[str], typer.Option("--param", "-p", help="key=value (JSON values allowed).")] = [],  # noqa: B006
    needs_approval: Annotated[bool, typer.Option(
        "--needs-approval", help="Wait for an approver (dashboard or mape decisions approve) before it runs.")] = False,
    approval_timeout: Annotated[Optional[str], typer.Option(
        help="With --needs-approval: expire unanswered after this long (e.g. 24h); default: wait.")] = None,
    config: ConfigOption = None,
) -> None:
    """Ask for an action now (admin role); the next tick dispatches it like any approved decision.

    With ``--needs-approval`` it waits for a second person, an approver, first.
    """
    from mape.controller import Controller

    if approval_timeout is not None and not needs_approval:
        _fail("--approval-timeout is for a request that waits for an approver: add --needs-approval")
    timeout = _duration_option("--approval-timeout", approval_timeout) if approval_timeout is not None else None
    settings = _settings(config)
    actor = _admin(settings, user, actor, f"request {action} on model {model}")
    try:
        decision = Controller(settings).request_action(model, action, params=_parse_params(param), actor=actor,
                                                       reason=reason, needs_approval=needs_approval,
                                                       approval_timeout=timeout)
    except (KeyError, LookupError) as exc:
        _fail(str(exc).strip("'\""))
    except ValueError as exc:
        _fail(f"--approval-timeout: {exc}")
    if needs_approval:
        typer.echo(f"decision {decision.id}: {action} on {model} asked by {actor}; it waits for an approver "
                   f"(mape decisions approve {decision.id}, or the dashboard's Approvals page)")
    else:
        typer.echo(f"decision {decision.id}: {action} on {model} approved by {actor}; it runs at the next tick")


# ---------------------------------------------------------------------------------------------- pauses

PausePolicyOption = Annotated[Optional[str], typer.Option("--policy", help="A policy: paused for every model.")]
PauseModelOption = Annotated[Optional[str], typer.Option("--model", help="A managed model: paused for every policy.")]


def _admin(settings, user: str | None, actor: str | None, act: str) -> str:  # type: ignore[no-untyped-def]
    """The name of the person running a command that needs the admin role; exits with status 3 otherwise."""
    from mape.access.roles import Role, require
    from mape.cli_people import identity_of

    identity = identity_of(settings, user, actor)
    try:
        require(identity, Role.admin, act)
    except MapeError as exc:
        _fail(str(exc), code=3)
    return identity.name


def _pause_target(policy: str | None, model: str | None) -> tuple[str, str]:
    if (policy is None) == (model is None):
        what = "both" if policy is not None else "neither"
        _fail(f"name exactly one of --policy NAME or --model NAME (got {what})")
    return ("policy", policy) if policy is not None else ("model", model)  # type: ignore[return-value]


@contextmanager
def _knowledge_session(settings):  # type: ignore[no-untyped-def]
    """A session on the configured knowledge base (migrated first); committed on success, engine disposed."""
    from knowledge.database import create_engine_for, session_scope
    from knowledge.migrate import upgrade

    upgrade(settings.db_url)
    engine = create_engine_for(settings.db_url)
    try:
        with session_scope(engine) as session:
            yield session
    finally:
        engine.dispose()


@app.command("pause")
def pause(
    reason: Annotated[str, typer.Option(help="Why; shown in every decision the pause suppresses.")],
    policy: PausePolicyOption = None,
    model: PauseModelOption = None,
    user: UserOption = None,
    actor: LocalActorOption = None,
    config: ConfigOption = None,
) -> None:
    """Pause a policy or a model (admin role): from the next tick its decisions are recorded as suppressed, never
    acted on."""
    from sqlmodel import select

    from knowledge import queries
    from knowledge.tables import PolicyVersion

    scope, name = _pause_target(policy, model)
    if not reason.strip():
        _fail("--reason must say why (it is shown in every decision the pause suppresses)")
    settings = _settings(config)
    actor = _admin(settings, user, actor, f"pause {scope} {name}")
    with _knowledge_session(settings) as session:
        if scope == "model":
            known = set(queries.models_by_name(session)) | {m.name for m in settings.models}
        else:
            known = set(session.exec(select(PolicyVersion.name)))
        row, created = queries.pause(session, scope, name, actor=actor, reason=reason)
    if created and name not in known:
        typer.echo(f"warning: no {scope} named {name!r} is known yet; paused it anyway", err=True)
    if created:
        typer.echo(f"{row}; resume with: mape resume --{scope} {name}")
    else:
        typer.echo(f"{scope} {name} is already paused: {row}")


@app.command("resume")
def resume(
    policy: PausePolicyOption = None,
    model: PauseModelOption = None,
    user: UserOption = None,
    actor: LocalActorOption = None,
    reason: Annotated[str, typer.Option(help="Why (recorded); with --policy and --model.")] = "",
    config: ConfigOption = None,
) -> None:
    """Lift the pause of a policy or a model (admin role); with both, let the policy act on the model again after
    a failed or inconclusive verification."""
    from knowledge import queries

    settings = _settings(config)
    actor = _admin(settings, user, actor, "resume " + " and ".join(
        f"{scope} {name}" for scope, name in (("policy", policy), ("model", model)) if name))
    if policy is not None and model is not None:
        with _knowledge_session(settings) as session:
            row = queries.models_by_name(session).get(model)
            if row is None or row.id is None:
                _fail(f"no managed model named {model!r} in the knowledge base")
            runs = queries.lift_verification_block(session, row.id, policy, actor=actor,
                                                   reason=reason or "lifted with mape resume")
        if not runs:
            _fail(f"policy {policy} is not blocked on model {model} by a verification")
        typer.echo(f"policy {policy} may act on model {model} again: block of run "
                   f"{', '.join(str(r.id) for r in runs)} lifted by {actor}")
        return
    scope, name = _pause_target(policy, model)
    with _knowledge_session(settings) as session:
        lifted = queries.resume(session, scope, name, actor=actor)
    if lifted is None:
        _fail(f"{scope} {name} is not paused (see mape pauses)")
    typer.echo(f"{scope} {name} resumed by {actor} (it was {lifted})")


@app.command("pauses")
def pauses(config: ConfigOption = None) -> None:
    """Every pause in force: what, by whom, since when, why."""
    from knowledge import queries

    with _knowledge_session(_settings(config)) as session:
        rows = [str(row) for row in queries.pauses(session)]
    if not rows:
        typer.echo("nothing is paused")
    for row in rows:
        typer.echo(row)


# ---------------------------------------------------------------------------------------------- carbon


def _duration_option(option: str, value: str):  # type: ignore[no-untyped-def]
    from mape._util.timeutil import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        _fail(f"{option}: {exc}")


@carbon_app.command("plan")
def carbon_plan(
    trace: Annotated[Path, typer.Option("--trace", help="Carbon intensity trace: CSV or Parquet, time then gCO2/kWh.")],
    duration: Annotated[str, typer.Option("--duration", help="How long the job runs, e.g. 1h.")],
    earliest: Annotated[str, typer.Option("--earliest", help="When it may start (ISO 8601; naive is UTC).")],
    deadline: Annotated[str, typer.Option(
        "--deadline", help="When it must have finished (ISO 8601), or a duration after --earliest (8h).")],
    price: Annotated[Optional[Path], typer.Option("--price", help="Electricity price trace, for a price objective.")] = None,
    objective: Annotated[str, typer.Option(
        "--objective", help="carbon, price, or weights such as carbon=0.7,price=0.3.")] = "carbon",
) -> None:
    """Print the window with the lowest forecast emissions (or price) for a job, as JSON; the trace is the forecast."""
    from mape.plan.scheduling.request import parse_moment, parse_objective, plan_job

    try:
        start = parse_moment("--earliest", earliest)
        result = plan_job(trace, duration=_duration_option("--duration", duration), earliest=start,
                          deadline=parse_moment("--deadline", deadline, after=start), price=price,
                          objective=parse_objective(objective))
    except MapeError as exc:
        _fail(str(exc))
    typer.echo(json.dumps(result, indent=2))


@carbon_app.command("backtest")
def carbon_backtest(
    trace: Annotated[Path, typer.Option("--trace", help="Carbon intensity trace: CSV or Parquet, time then gCO2/kWh.")],
    duration: Annotated[str, typer.Option("--duration", help="How long each job runs, e.g. 1h.")] = "1h",
    slack: Annotated[str, typer.Option("--slack", help="How long a job may wait before it starts, e.g. 8h.")] = "8h",
    every: Annotated[str, typer.Option("--every", help="Time between job arrivals, e.g. 24h.")] = "24h",
    forecast: Annotated[str, typer.Option(
        "--forecast", help="past (sees only the past), perfect, noisy:SIGMA (e.g. noisy:0.05) or naive[:LAG].")] = "past",
    guard: Annotated[bool, typer.Option(
        "--guard/--no-guard", help="Defer only when the predicted gain exceeds the forecaster's recent error.")] = True,
    offset: Annotated[str, typer.Option("--offset", help="First arrival this long after the warm-up, e.g. 12h.")] = "0s",
    warmup: Annotated[str, typer.Option("--warmup", help="No job arrives in the trace's first WARMUP.")] = "14d",
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of a noisy forecaster.")] = None,
    jobs: Annotated[bool, typer.Option("--jobs", help="Also print every job's record.")] = False,
) -> None:
    """Replay a trace with jobs every --every that may wait --slack; print the savings against running at once as JSON."""
    from mape.plan.scheduling.backtest import backtest
    from mape.plan.scheduling.trace import read_trace

    try:
        result = backtest(read_trace(trace), duration=_duration_option("--duration", duration),
                          slack=_duration_option("--slack", slack), every=_duration_option("--every", every),
                          forecast=forecast, guard=guard, offset=_duration_option("--offset", offset),
                          warmup=_duration_option("--warmup", warmup), seed=seed)
    except MapeError as exc:
        _fail(str(exc))
    typer.echo(json.dumps(result.as_dict(jobs=jobs), indent=2))


from mape.cli_people import decisions_app, policy_mode, users_app  # noqa: E402 - it uses the helpers above, inside its commands

from mape.cli_fleet import leases_command  # noqa: E402 - the same
from mape.cli_workers import workers_app  # noqa: E402 - the same

policy_app.command("mode")(policy_mode)
app.command("leases")(leases_command)
app.add_typer(decisions_app, name="decisions")
app.add_typer(users_app, name="users")
app.add_typer(workers_app, name="workers")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
