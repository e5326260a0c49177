"""``mape demo``: the closed loop, end to end, on the embedded default.

A credit model serves a synthetic stream for a day and a half of simulated
hours; the controller ticks once an hour, as one Prefect flow run each, with
the shipped policies from ``policies/``:

1. hours 1–11: the population is stable; the loop stays quiet;
2. hour 12: a downturn shifts the population and the default rule; drift is
   detected, accuracy drops, ``retrain-on-drift`` fires with its evidence, the
   candidate beats the champion on held-out recent data and is promoted, and
   accuracy recovers;
3. hour 20: the downturn ends and the population returns; the retrained
   version, fitted to the downturn, loses accuracy; its policy's ``verify``
   (accuracy within 3 points of its baseline 8 hours after the retrain) fails
   and the loop rolls back to version 1, the last verified-good version, and
   does not retrain again on that symptom;
4. hours 24–27: a labelling bug corrupts most labels; at hour 29 an engineer
   asks for a retrain; the candidate, trained on the corrupted labels, loses
   to production on clean held-out data and is rejected: it never serves.

Everything lands in the knowledge base (``<dir>/mape.db``). The run ends with
checks of the decision trail and exits non-zero if the loop did not close.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from sqlmodel import col, select

from examples.credit.serving import FEATURES, CreditServing
from examples.credit.stream import CATEGORICAL, NUMERIC, generate
from knowledge import queries, registry
from knowledge.database import create_engine_for, session_scope
from knowledge.migrate import upgrade
from knowledge.tables import ActionRun, Decision, ModelVersion, PolicyVersion, Stage, Symptom
from mape.execute.training import TrainingRequest, load_artifact, run_entrypoint, save_artifact

MODEL = "credit-risk"
ENTRYPOINT = "examples.credit.model:train"
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Scenario:
    """The demo's ground truth: when things happen, in ticks (one simulated hour each)."""

    start: datetime = datetime(2026, 3, 2, 0, 0, tzinfo=timezone.utc)
    ticks: int = 32
    onset: int = 12
    recovery: int = 20
    incident: tuple[int, ...] = (24, 25, 26, 27)
    incident_flip_rate: float = 0.7
    manual_retrain_at: int = 29
    manual_retrain_window: str = "5h"
    rows_per_hour: int = 1000
    history_hours: int = 24
    seed: int = 7

    def at(self, tick: int) -> datetime:
        return self.start + timedelta(hours=tick)

    @property
    def onset_time(self) -> datetime:
        """The first drifted request arrives in the hour that ends at the onset tick."""
        return self.at(self.onset) - timedelta(hours=1)


def write_config(directory: Path, policies_dir: Path) -> Path:
    config = {
        "db_url": "sqlite:///mape.db",
        "policies_dir": str(policies_dir),
        "artifacts_dir": "artifacts",
        "tick_interval": "1h",
        "controller_id": "demo-controller",
        "prefect": {"home": "prefect"},
        "access": {"users_file": "users.yaml"},  # the dashboard's sign-in (a demo admin is added at the end)
        "models": [{
            "name": MODEL,
            "owner": "risk-ml@example.com",
            "description": "Probability of default for consumer credit applications.",
            "labels": {"team": "risk", "tier": "gold"},
            "features": {"numeric": NUMERIC, "categorical": CATEGORICAL},
            "inference": {"kind": "parquet", "path": "data/inference", "timestamp_column": "timestamp",
                          "id_column": "request_id"},
            "labels_source": {"kind": "parquet", "path": "data/labels", "timestamp_column": "labelled_at",
                              "id_column": "request_id"},
            "prediction_column": "prediction",
            "version_column": "model_version",
            "label_column": "label",
            "training": {"entrypoint": ENTRYPOINT},
            "drift": {"window": "1h", "alpha": 0.05},
            # Fewer labelled predictions than this are not trusted: a new version's first quarter hour
            # of labels (about 250 rows) is too noisy to judge it by.
            "performance": {"window": "2h", "min_samples": 500},
            "promotion": {"evaluation_window": "1h", "margin": 0.0, "min_samples": 200},
        }],
    }
    path = directory / "mape.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def bootstrap(serving: CreditServing, engine: Any, artifacts: Path, scenario: Scenario) -> dict[str, Any]:
    """Train version 1 on a day of history, put it in production, and serve that history with it."""
    t0 = scenario.at(0)
    history = serving.requests(t0 - timedelta(hours=scenario.history_hours), drifted=False,
                               hours=scenario.history_hours)
    cut = t0 - timedelta(hours=4)
    train, holdout = history[history["timestamp"] < cut], history[history["timestamp"] >= cut]
    request = TrainingRequest(model_name=MODEL, data=train.reset_index(drop=True), features=FEATURES,
                              numeric=NUMERIC, categorical=CATEGORICAL, window_start=train["timestamp"].min(),
                              window_end=cut)
    trained = run_entrypoint(ENTRYPOINT, request)
    accuracy = float(trained.estimator.score(holdout[FEATURES], holdout["label"]))
    uri = save_artifact(trained.estimator, artifacts / MODEL / "bootstrap")
    with session_scope(engine) as session:
        model = registry.get_model(session, MODEL)
        version = registry.register_version(
            session, model_id=model.id, artifact_uri=uri, metrics={"accuracy": accuracy, **trained.metrics},
            training_window=(t0 - timedelta(hours=scenario.history_hours), cut), actor="demo-bootstrap")
        registry.promote(session, version, actor="demo-bootstrap", reason="initial version", at=t0)
    serving.serve("history", history)
    return {"accuracy": accuracy, "rows": len(train)}


def _signals(engine: Any, at: datetime) -> dict[str, float | None]:
    with session_scope(engine) as session:
        model = registry.get_model(session, MODEL)
        latest = queries.latest_metrics(session, model.id, until=at)
        production = registry.production_version(session, model.id)
    values = {name: obs.value for name, obs in latest.items() if obs.time == at}
    values["production"] = float(production.version) if production else None
    return values


def _line(tick: int, at: datetime, signals: dict[str, float | None], served: dict[str, Any]) -> str:
    share = signals.get("drift.share_drifted")
    drifted, features = signals.get("drift.n_drifted"), signals.get("drift.n_features")
    accuracy = signals.get("performance.accuracy")
    drift = f"drift {share:4.0%} ({int(drifted or 0)}/{int(features or 0)})" if share is not None else "drift   -      "
    acc = f"accuracy {accuracy:.3f}" if accuracy is not None else "accuracy   -  "
    return (f"hour {tick:2d} {at:%a %H:%M}  serving v{served['version']}  {drift}  {acc}"
            f"  (true accuracy this hour {served['true_accuracy']:.3f})")


def _events(report: dict[str, Any]) -> list[str]:
    lines = []
    for symptom in report.get("opened", []):
        lines.append(f"    ! symptom opened: {symptom}")
    for symptom in report.get("closed", []):
        lines.append(f"    ✓ symptom closed: {symptom}")
    for decision in report.get("decisions", []):
        if decision["status"] == "suppressed":
            lines.append(f"    · {decision['policy']} → {decision['action']} suppressed: {decision['reason']}")
        else:
            lines.append(f"    ▶ decision {decision['id']}: {decision['policy']} → {decision['action']} "
                         f"({decision['status']})")
    for action in report.get("actions", []):
        result = action.get("result") or {}
        if action["action"] == "retrain" and "version" in result:
            verdict = "PROMOTED" if result.get("promoted") else "REJECTED"
            lines.append(f"    ■ {action['action']} run {action['id']} {action['state']}: candidate "
                         f"v{result['version']} {verdict}: {result.get('reason', '')}")
        else:
            detail = result or action.get("message", "")
            lines.append(f"    ■ {action['action']} run {action['id']} {action['state']}: {detail}")
    for error in report.get("errors", []):
        lines.append(f"    ✗ {error}")
    return lines


def check(engine: Any, scenario: Scenario, serving_seed: int = 12345) -> list[str]:
    """The loop closed? Returns the problems found in the knowledge base (empty: it did)."""
    problems: list[str] = []
    with session_scope(engine) as session:
        model = registry.get_model(session, MODEL)
        drift_symptoms = session.exec(select(Symptom).where(Symptom.model_id == model.id,
                                                            Symptom.kind == "data_drift")).all()
        early = [s for s in drift_symptoms if s.opened_at < scenario.at(scenario.onset)]
        if early:
            problems.append(f"data drift reported before the onset: {[str(s.opened_at) for s in early]}")
        if not [s for s in drift_symptoms if s.opened_at >= scenario.at(scenario.onset)]:
            problems.append("no data_drift symptom opened after the onset")

        retrains = session.exec(select(Decision).where(
            Decision.model_id == model.id, Decision.policy_name == "retrain-on-drift", Decision.action == "retrain",
            col(Decision.status).in_(["proposed", "approved"])).order_by(Decision.id)).all()
        if not retrains:
            problems.append("retrain-on-drift never decided to retrain")
        promoted_version = None
        for decision in retrains:
            known = session.exec(select(PolicyVersion).where(PolicyVersion.name == decision.policy_name,
                                                             PolicyVersion.sha256 == decision.policy_sha256)).first()
            if known is None or not decision.evidence:
                problems.append(f"decision {decision.id} does not name a stored policy version and its evidence")
            run = session.exec(select(ActionRun).where(ActionRun.decision_id == decision.id)).first()
            if run is None or run.state != "succeeded":
                problems.append(f"decision {decision.id}'s action run did not succeed ({run.state if run else 'none'})")
            elif run.result.get("promoted"):
                promoted_version = session.exec(select(ModelVersion).where(
                    ModelVersion.model_id == model.id, ModelVersion.version == run.result["version"])).one()
        v1 = session.exec(select(ModelVersion).where(ModelVersion.model_id == model.id,
                                                     ModelVersion.version == 1)).one()
        manual = session.exec(select(Decision).where(Decision.model_id == model.id,
                                                     Decision.policy_name == "manual")).all()
        bad_versions = []
        for decision in manual:
            run = session.exec(select(ActionRun).where(ActionRun.decision_id == decision.id)).first()
            if run is not None and "version" in run.result:
                bad_versions.append(session.exec(select(ModelVersion).where(
                    ModelVersion.model_id == model.id, ModelVersion.version == run.result["version"])).one())
        if not bad_versions:
            problems.append("the retrain on corrupted labels produced no candidate")
        for bad in bad_versions:
            if bad.stage != Stage.rejected.value or bad.promoted_at is not None:
                problems.append(f"the candidate trained on corrupted labels (v{bad.version}) reached production")

        rolled_back = _verification_rollback(session, model.id, retrains, scenario, problems)
        production = registry.production_version(session, model.id)
        recent = queries.observations_between(session, model.id, scenario.at(scenario.ticks - 2),
                                              scenario.at(scenario.ticks), metrics=["performance.accuracy"])
    if rolled_back and (production is None or production.version != 1):
        problems.append(f"version 1 does not serve at the end after the rollback (production: "
                        f"{production.version if production else 'none'})")
    recent_values = [o.value for o in recent if o.value is not None]
    baseline = v1.metrics.get("accuracy", 0.0)
    if not recent_values or min(recent_values) < baseline - 0.05:
        problems.append(f"accuracy did not recover: last measurements {recent_values}, pre-drift baseline "
                        f"{baseline:.3f}")
    if promoted_version is None:
        problems.append("no retrained version was promoted")
    else:
        fresh = generate(5000, drifted=True, rng=np.random.default_rng(serving_seed))
        new_acc = float(np.mean(load_artifact(promoted_version.artifact_uri).predict(fresh[FEATURES]) == fresh["label"]))
        old_acc = float(np.mean(load_artifact(v1.artifact_uri).predict(fresh[FEATURES]) == fresh["label"]))
        if not new_acc > old_acc:
            problems.append(f"promoted v{promoted_version.version} ({new_acc:.3f}) does not beat v1 ({old_acc:.3f}) "
                            "on post-drift data")
    return problems


def _verification_rollback(session: Any, model_id: int, retrains: Sequence[Decision], scenario: Scenario,
                           problems: list[str]) -> bool:
    """Whether the promoted retrain failed its verification after the recovery and was rolled back to v1."""
    for decision in retrains:
        run = session.exec(select(ActionRun).where(ActionRun.decision_id == decision.id)).first()
        if run is None or not run.result.get("promoted"):
            continue
        if run.verdict != "fail" or run.verdict_at is None or run.verdict_at < scenario.at(scenario.recovery):
            problems.append(f"the retrain promoted by decision {decision.id} did not fail its verification after the "
                            f"downturn ended (verdict {run.verdict} at {run.verdict_at})")
            return False
        follow_up = session.exec(select(Decision).where(Decision.model_id == model_id,
                                                        Decision.follows_run_id == run.id)).first()
        rollback = None if follow_up is None else session.exec(
            select(ActionRun).where(ActionRun.decision_id == follow_up.id)).first()
        if follow_up is None or follow_up.action != "rollback" or rollback is None or \
                rollback.state != "succeeded" or rollback.result.get("to_version") != 1:
            problems.append(f"the failed verification of run {run.id} was not followed by a rollback to v1")
            return False
        return True
    problems.append("no promoted retrain to verify")
    return False


def run_demo(directory: Path, *, echo: Callable[[str], Any] = print, scenario: Scenario = Scenario(),
             policies_dir: Path | None = None) -> bool:
    """Run the scenario in ``directory`` (recreated); returns True if the loop closed."""
    began = time.monotonic()
    policies_dir = policies_dir or REPO_ROOT / "policies"
    if not policies_dir.is_dir():
        raise FileNotFoundError(f"the shipped policy library is not at {policies_dir}")
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    config_path = write_config(directory, policies_dir)
    os.environ.setdefault("PREFECT_HOME", str(directory / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    logging.getLogger("prefect").setLevel(logging.WARNING)

    from flows.controllers import controller_for
    from flows.tick import tick_flow

    echo(f"mape demo in {directory}")
    echo(f"  policies: {policies_dir}")
    controller = controller_for(str(config_path))
    engine = controller.engine
    upgrade(controller.settings.db_url)
    serving = CreditServing(directory / "data", engine, MODEL, rows_per_hour=scenario.rows_per_hour, seed=scenario.seed)
    boot = bootstrap(serving, engine, Path(controller.settings.artifacts_dir), scenario)
    echo(f"  v1 trained on {boot['rows']} rows of history, held-out accuracy {boot['accuracy']:.3f}, in production")
    echo(f"  policies in force: {', '.join(sorted(p.name for p in controller.policies))}")
    for error in controller.policy_errors:
        echo(f"  refused policy: {error}")
    echo(f"  drift begins in hour {scenario.onset} and ends in hour {scenario.recovery}; labels of hours {scenario.incident[0]}-{scenario.incident[-1]} "
         f"are corrupted; an engineer asks for a retrain in hour {scenario.manual_retrain_at}")
    echo("  starting Prefect (embedded) and ticking once per simulated hour...")
    echo("")
    for tick in range(1, scenario.ticks + 1):
        at = scenario.at(tick)
        batch = serving.requests(at - timedelta(hours=1), drifted=scenario.onset <= tick < scenario.recovery)
        flip = scenario.incident_flip_rate if tick in scenario.incident else 0.0
        served = serving.serve(f"hour-{tick:04d}", batch, corrupt_labels=flip)
        if tick == scenario.manual_retrain_at:
            decision = controller.request_action(
                MODEL, "retrain", params={"window": scenario.manual_retrain_window}, actor="alice@example.com",
                reason="refresh the model on the last hours", at=at)
            echo(f"    ▶ decision {decision.id}: alice@example.com asks for a retrain on the last "
                 f"{scenario.manual_retrain_window} (its labels were corrupted by an upstream bug)")
        report = tick_flow(config_file=str(config_path), at=at)
        echo(_line(tick, at, _signals(engine, at), served))
        for line in _events(report):
            echo(line)

    problems = check(engine, scenario)
    waiting = controller.request_action(
        MODEL, "retrain", params={"window": "24h"}, actor="bob@example.com", needs_approval=True,
        reason="retrain on the whole last day before the quarter-end freeze", at=scenario.at(scenario.ticks))
    echo(f"    ▶ decision {waiting.id}: bob@example.com asks for a retrain on the last day; it waits for an approver")
    echo("")
    elapsed = time.monotonic() - began
    if problems:
        echo(f"the loop did NOT close ({elapsed:.0f}s):")
        for problem in problems:
            echo(f"  - {problem}")
    else:
        echo(f"the loop closed ({elapsed:.0f}s): drift detected after the onset, retrained, promoted, accuracy "
             "recovered; when the downturn ended, the retrain failed its verification and was rolled back to v1; "
             "the candidate trained on corrupted labels was rejected.")
    mape = _command_path()
    echo(f"knowledge base: {controller.settings.db_url}")
    echo(f"inspect it:     {mape} models list --config {config_path}")
    password = _demo_user(controller.settings.access.users_file)
    echo(f"dashboard:      {mape} dashboard --config {config_path}")
    echo(f"                then open http://127.0.0.1:8501 and sign in as demo, password {password}")
    echo(f"                decision {waiting.id} waits on its Approvals page (or: {mape} decisions approve {waiting.id} "
         f"--config {config_path})")
    return not problems


def _demo_user(users_file: Path | None) -> str:
    """An admin named ``demo`` with a fresh random password in the demo's users file; the password."""
    from mape.access import Role, UsersFile

    assert users_file is not None  # write_config names one
    password = secrets.token_urlsafe(9)
    UsersFile(users_file).add("demo", Role.admin, password)
    return password


def _command_path() -> str:
    """``mape`` if it is on PATH, else its path in the running virtualenv (as after ``make demo``)."""
    installed = Path(sys.executable).parent / "mape"
    found = shutil.which("mape")
    if found and Path(found).resolve() == installed.resolve():
        return "mape"
    try:
        return str(installed.relative_to(Path.cwd()))
    except ValueError:
        return str(installed)


def create_engine(directory: Path) -> Any:
    """The demo's knowledge base, for tests that inspect a finished run."""
    return create_engine_for(f"sqlite:///{directory / 'mape.db'}")
