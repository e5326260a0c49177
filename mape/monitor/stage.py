"""The Monitor stage: one pass over the fleet per tick, writing Observation rows.

Who calls it: the controller, once per tick, with an open session, the ids of
the managed models and the tick's logical time. For each configured model it
measures drift (the current window of the inference log against the
production version's training window) and performance (predictions of the
performance window labelled by the tick time), and writes the observations
below through :func:`knowledge.queries.add_observations`. Other stages and the
policies depend on these names:

- sensor ``quality``, labels ``{}``, unless the model's ``quality.enabled`` is
  off: ``quality.schema_changes`` (``quality.missing_columns`` +
  ``quality.new_columns`` + ``quality.retyped_columns``),
  ``quality.null_spikes``, ``quality.out_of_range_spikes``,
  ``quality.unseen_category_columns``, ``quality.max_null_rate_increase``,
  ``quality.max_out_of_range_share``, ``quality.max_unseen_category_share``,
  ``quality.issues`` (columns with any problem), ``quality.n_current``: the
  data quality of the drift window, checked before drift against the same
  reference; without a verdict (too few rows) all but the last are ``None``;
  per column, labels ``{"column": name}``, ``quality.column.*``
  (:func:`~mape.monitor.sensors.quality.quality_observations`);
- sensor ``drift``, labels ``{}``: ``drift.share_drifted``, ``drift.n_drifted``,
  ``drift.n_features``, ``drift.min_q_value``, ``drift.detected`` (1.0/0.0),
  ``drift.n_reference``, ``drift.n_current``; without a verdict (too few rows)
  all but the last two have value ``None``; ``drift.reference_version``: the
  stored version of the reference compared with
  (:mod:`mape.monitor.reference`; absent while the reference is too small to
  store);
- sensor ``drift``, labels ``{"feature": name, "test": "ks" | "cvm" | "chi2"}``:
  ``drift.feature.statistic``, ``drift.feature.p_value``,
  ``drift.feature.q_value``, ``drift.feature.drifted`` (1.0/0.0: significant
  and at least the effect floor); with the label ``"effect": "wasserstein" |
  "psi" | "js"`` added, ``drift.feature.effect_size``;
- sensor ``performance``, labels ``{}``: ``performance.accuracy``,
  ``performance.precision``, ``performance.recall``, ``performance.f1``,
  ``performance.accuracy_drop`` (``None`` without a baseline accuracy on the
  production version), ``performance.n_labelled``; with a ``score_column``
  also ``performance.roc_auc``, ``performance.log_loss`` and the label-free
  estimate ``performance.estimated_accuracy``,
  ``performance.estimated_accuracy_drop`` over ``performance.n_estimated``
  predictions (labelled or not);
  for regression ``performance.mae``, ``performance.rmse``,
  ``performance.n_labelled``; below ``performance.min_samples`` labelled rows
  every value but ``performance.n_labelled`` is ``None``;
- sensor ``fairness``, for models with a ``fairness`` section: the summary
  ``fairness.<field>`` (labels ``{}``: the worst gap over the protected
  attributes, with bootstrap bounds) on the labelled predictions of the
  production version in ``fairness.window``, per attribute
  ``fairness.gap.*`` and per group ``fairness.group.*``;
- sensor ``gpu``, for models with a ``gpu`` section: the summary ``gpu.<field>``
  (labels ``{}``: utilization, memory, power, energy, temperature, devices;
  unknown values are not written) and per device ``gpu.device.<field>``
  (labels ``{"device": ...}``); one NVML session serves the fleet;
- sensor ``carbon``, labels ``{}``, for every model when ``carbon`` is set:
  ``carbon.intensity``, ``carbon.forecast_min``, ``carbon.forecast_min_in_seconds``,
  ``carbon.forecast_mean`` (the grid is the fleet's: read once per tick);
- sensor ``prometheus``, labels ``{}``, when ``prometheus`` is set: each
  configured query's metric (e.g. ``serving.latency_p95_ms``) for each model,
  ``{model}`` in the PromQL replaced by its name; a failing query is a stage
  error of that model, its metric absent;
- sensor ``canary``, labels ``{}``, for models with a running canary
  (:mod:`mape.execute.canary`) and a ``version_column``: the performance
  metrics above, of the predictions the canary's candidate version served
  (its accuracy drop against the candidate's own training accuracy), named
  ``canary.<key>`` (``canary.accuracy``, ``canary.n_labelled``, ...), and
  ``canary.version``, the candidate's number; the verification of the
  canary's steps reads them as the candidate's ``performance``
  (:mod:`mape.plan.canary`);
- sensor ``serving``, labels ``{}``, for models with a ``serving`` section:
  ``serving.replicas`` (asked for) and ``serving.ready_replicas`` (answering
  their health check), read from the model's serving target.

A value of ``None`` means "no data this tick", never good or bad. A model
whose measurement fails (no production version, an unreadable source) gets no
new rows from the failed sensor; the failure is logged, listed in
:attr:`MonitorReport.errors`, and the other models and sensors go on. If that
sensor measured the model successfully less than the model's ``fallback_for``
ago, its summary rows (labels ``{}``) of then are written again at this tick's
time, and the error says "falling back to the value of <time>"; past
``fallback_for`` nothing is written and the Analyze stage reports the signal
stale. A feature column missing from the current window is the quality
sensor's finding: drift tests the features that are there.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, partial
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from sqlmodel import Session

from knowledge.canaries import canary_versions
from knowledge.queries import add_observations
from knowledge.registry import production_versions
from knowledge.tables import ModelVersion, Observation, new_observation, observation_row
from mape._util.timeutil import ensure_utc
from mape.config import CarbonConfig, FileSourceConfig, ModelConfig, PrometheusConfig, SqlSourceConfig
from mape.data import CachedWindow, TableSource, labelled_window, open_source
from mape.errors import DataSourceError, MapeError
from mape.monitor.reference import Reference, ReferenceWindows
from mape.monitor.sensors import DriftReport, DriftSensor, PerformanceReport, PerformanceSensor
from mape.monitor.carbon import carbon_observations, sensor_from_config
from mape.monitor.sensors.fairness import FairnessReport, FairnessSensor, fairness_observations
from mape.monitor.sensors.gpu import GPUSensor, gpu_observations
from mape.monitor.sensors.prometheus import PrometheusSensor, prometheus_observations
from mape.monitor.sensors.quality import DataQualitySensor, QualityReport, quality_rows
from mape.monitor.sensors.serving import serving_observations
from mape.serving.factory import target_for
from mape.serving.target import ServingHealth

logger = logging.getLogger(__name__)

SourceFactory = Callable[[FileSourceConfig | SqlSourceConfig], TableSource]
_T = TypeVar("_T")
Frame = Callable[[], pd.DataFrame]
#: An observation to store: the ORM object, or its column values (:func:`knowledge.tables.observation_row`).
Row = Observation | dict[str, Any]


@dataclass(frozen=True)
class _LastGood:
    """The summary values (metric, value) a sensor wrote for a model when it last measured it successfully."""

    at: datetime
    values: tuple[tuple[str, float | None], ...]


@dataclass(frozen=True)
class StageError:
    """A measurement that failed for one model; the tick went on without it."""

    model: str
    sensor: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class ModelSummary:
    """What the Monitor measured for one model in one tick."""

    model: str
    version: int | None = None
    drift: DriftReport | None = None
    performance: PerformanceReport | None = None
    quality: QualityReport | None = None

    @property
    def share_drifted(self) -> float | None:
        return None if self.drift is None else self.drift.share_drifted

    @property
    def detected(self) -> bool | None:
        return None if self.drift is None else self.drift.detected

    @property
    def accuracy(self) -> float | None:
        return None if self.performance is None else self.performance.accuracy

    @property
    def n_labelled(self) -> int | None:
        return None if self.performance is None else self.performance.n_labelled

    def as_dict(self) -> dict[str, Any]:
        """The summary as plain JSON values (for tick reports and the timeline)."""
        drift, performance = self.drift, self.performance
        return {
            "version": self.version,
            "share_drifted": self.share_drifted,
            "n_drifted": None if drift is None else drift.n_drifted,
            "n_features": None if drift is None else drift.n_features,
            "min_q_value": None if drift is None else drift.min_q_value,
            "detected": self.detected,
            "drift_reason": None if drift is None else drift.reason,
            "accuracy": self.accuracy,
            "f1": None if performance is None else performance.f1,
            "accuracy_drop": None if performance is None else performance.accuracy_drop,
            "mae": None if performance is None else performance.mae,
            "rmse": None if performance is None else performance.rmse,
            "n_labelled": self.n_labelled,
            "performance_reason": None if performance is None else performance.reason,
            "quality_issues": None if self.quality is None else self.quality.summary()["issues"],
        }

    def __str__(self) -> str:
        version = "no production version" if self.version is None else f"version {self.version}"
        quality = "" if self.quality is None else f"quality: {self.quality}; "
        drift = "drift not measured" if self.drift is None else f"drift: {self.drift}"
        performance = "performance not measured" if self.performance is None else f"performance: {self.performance}"
        return f"model {self.model} ({version}): {quality}{drift}; {performance}"


@dataclass(frozen=True)
class MonitorReport:
    """The result of one Monitor pass: a summary per model, the failures, and how many rows were written."""

    at: datetime
    models: tuple[ModelSummary, ...]
    errors: tuple[StageError, ...]
    n_observations: int

    def model(self, name: str) -> ModelSummary:
        """The summary of the model called ``name``."""
        for summary in self.models:
            if summary.model == name:
                return summary
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON values: ``models`` maps each name to :meth:`ModelSummary.as_dict`."""
        return {"at": self.at.isoformat(), "n_observations": self.n_observations,
                "models": {summary.model: summary.as_dict() for summary in self.models},
                "errors": [str(error) for error in self.errors]}

    def __str__(self) -> str:
        lines = [f"monitor at {self.at.isoformat()}: {self.n_observations} observations"]
        lines += [f"  {summary}" for summary in self.models]
        lines += [f"  error: {error}" for error in self.errors]
        return "\n".join(lines)


class Monitor:
    """Measures every configured model and writes its observations.

    Sources are opened once per model and kept; the quality and drift sensors
    of a model are fitted once per reference version and kept until the
    model's reference changes (:class:`~mape.monitor.reference.ReferenceWindows`:
    fixed, rolling or reservoir, stored in the knowledge base; a new production
    version brings its own). A reference is read once for both sensors; one
    smaller than a sensor's ``min_samples`` is not kept, so a log filled in
    later is picked up. Both score the same current window, read once per tick with all its
    columns (the schema check needs them); the performance sensor's predictions
    come from it too when its window lies within the drift window
    (:class:`~mape.data.CachedWindow`). Observations are stored model by model.
    The last good summary of each sensor and model is kept for the fallback.

    Parameters
    ----------
    models : sequence of ModelConfig
        The managed models.
    source_factory : callable, default :func:`mape.data.open_source`
        Builds a :class:`~mape.data.TableSource` from a source configuration.
    """

    def __init__(self, models: Sequence[ModelConfig], *, source_factory: SourceFactory = open_source,
                 serving_dir: Path | None = None, carbon: CarbonConfig | None = None,
                 prometheus: PrometheusConfig | None = None) -> None:
        self.models = tuple(models)
        self.source_factory = source_factory
        self.serving_dir = serving_dir
        gpu = [m.gpu for m in self.models if m.gpu is not None]
        # one NVML session for the fleet: a machine without a driver says so once, not once per model
        self._gpu = GPUSensor(retry_unavailable_after=min(g.retry_unavailable_after for g in gpu)) if gpu else None
        # the grid's intensity is the fleet's: read once a tick, written for every model (policies read it per model)
        self._carbon = sensor_from_config(carbon) if carbon is not None else None
        self._prometheus = PrometheusSensor.from_config(prometheus) if prometheus is not None else None
        self._sources: dict[tuple[str, str], TableSource] = {}
        # each model's reference (fixed, rolling, reservoir), versioned in the knowledge base
        self._references = ReferenceWindows(self._read_window)
        # sensors fitted on a stored reference, kept while it stays the model's reference (its key)
        self._drift_sensors: dict[str, tuple[tuple[int, int], DriftSensor]] = {}
        self._quality_sensors: dict[str, tuple[tuple[int, int], DataQualitySensor]] = {}
        self._last_good: dict[tuple[str, str], _LastGood] = {}

    def run(self, session: Session, model_ids: Mapping[str, int], at: datetime, *,
            others: Collection[str] = ()) -> MonitorReport:
        """Measure every model at logical time ``at`` and write the observations (flushed, not committed).

        ``others``: configured models another controller acts for (it holds
        their leases); they are left out without a word.
        """
        at = ensure_utc(at)
        summaries: list[ModelSummary] = []
        errors: list[StageError] = []
        rows: list[Row] = []
        written = 0
        carbon = self._guarded(errors, "*", "carbon", partial(self._carbon.measure, at)) if self._carbon else None
        self._references.load(session, list(model_ids.values()))
        productions = production_versions(session, (model_ids[c.name] for c in self.models if c.name in model_ids))
        canaries = canary_versions(session, list(model_ids.values()))
        for cfg in self.models:
            model_id = model_ids.get(cfg.name)
            if model_id is None and cfg.name in others:
                continue
            production = None if model_id is None else productions.get(model_id)
            if model_id is None or production is None:
                problem = "is not registered in the knowledge base" if model_id is None else "has no production version"
                _record(errors, StageError(cfg.name, "model", f"Model {cfg.name} {problem}; it is not monitored."))
                summaries.append(ModelSummary(cfg.name))
                continue
            measured = partial(self._measured, errors, rows, cfg, model_id, at)
            # one read of each window serves both sensors (and none when both are fitted and the read fails)
            reference = cache(partial(self._references.resolve, session, cfg, production, at))
            current = cache(partial(self._read_current, cfg, at))
            quality = None
            if cfg.quality.enabled:
                quality = measured("quality", partial(self._measure_quality, cfg, reference, current), quality_rows)
            drift = measured("drift", partial(self._measure_drift, cfg, reference, current),
                             lambda model_id, at, report: [*_drift_rows(model_id, at, report),
                                                           *_reference_rows(model_id, at, reference())])
            if drift is not None:
                if cfg.reference.kind == "reservoir":  # the sample learns from the window the sensors just read
                    self._guarded(errors, cfg.name, "reference",
                                  partial(self._references.observe, cfg, production, current(), at))
            performance = measured("performance", partial(self._measure_performance, cfg, production, at, current),
                                   _performance_rows)
            canary = canaries.get(model_id)
            if canary is not None and cfg.version_column is not None:  # the candidate's own predictions, apart
                candidate = canary[1]
                measured("canary", partial(self._measure_performance, cfg, candidate, at, current),
                         partial(_canary_rows, candidate.version))
            if carbon is not None:
                rows += carbon_observations(model_id, at, carbon)
            if cfg.fairness is not None:
                measured("fairness", partial(self._measure_fairness, cfg, production, at), fairness_observations)
            if self._prometheus is not None:
                queried = measured("prometheus", partial(self._prometheus.read, cfg.name, at), prometheus_observations)
                if queried is not None:
                    for problem in queried.errors:
                        errors.append(StageError(cfg.name, "prometheus", str(problem)))
            if cfg.gpu is not None and self._gpu is not None:
                measured("gpu", partial(self._gpu.read, cfg.gpu.devices), gpu_observations)
            if cfg.serving is not None and self.serving_dir is not None:
                measured("serving", partial(self._measure_serving, cfg), serving_observations)
            summaries.append(ModelSummary(cfg.name, production.version, drift, performance, quality))
            # stored model by model (one transaction all the same): a tick's rows kept to the end would outlive
            # the young garbage-collector generations and cost a full collection every tick
            written += add_observations(session, rows)
            rows.clear()
        written += add_observations(session, rows)
        return MonitorReport(at=at, models=tuple(summaries), errors=tuple(errors), n_observations=written)

    # ------------------------------------------------------------------ sensors

    def _read_window(self, cfg: ModelConfig, start: datetime, end: datetime) -> pd.DataFrame:
        """``[start, end)`` of the model's inference log, every column (references are read through this)."""
        return self._source(cfg, "inference").read(start, end)

    def _read_current(self, cfg: ModelConfig, at: datetime) -> pd.DataFrame:
        """The drift window of the inference log ending at ``at``, every column."""
        return self._source(cfg, "inference").read(at - cfg.drift.window, at)

    def _measure_quality(self, cfg: ModelConfig, reference: Callable[[], Reference], current: Frame) -> QualityReport:
        ref = reference()
        cached = self._quality_sensors.get(cfg.name)
        if cached is not None and ref.key is not None and cached[0] == ref.key:
            sensor = cached[1]
        else:
            sensor = DataQualitySensor.from_config(cfg.features, cfg.quality).fit(ref.frame())
            if ref.key is not None and sensor.n_reference_ >= sensor.min_samples:  # else fitted again next tick
                self._quality_sensors[cfg.name] = (ref.key, sensor)
        return sensor.score(current())

    def _measure_drift(self, cfg: ModelConfig, reference: Callable[[], Reference], current: Frame) -> DriftReport:
        return self._drift_sensor(cfg, reference()).score(current(), missing="skip")

    def _drift_sensor(self, cfg: ModelConfig, reference: Reference) -> DriftSensor:
        cached = self._drift_sensors.get(cfg.name)
        if cached is not None and reference.key is not None and cached[0] == reference.key:
            return cached[1]
        sensor = DriftSensor.from_config(cfg.features, cfg.drift).fit(reference.frame())
        if reference.key is not None and sensor.n_reference_ >= sensor.min_samples:  # else fitted again next tick
            self._drift_sensors[cfg.name] = (reference.key, sensor)
        return sensor

    def _measure_fairness(self, cfg: ModelConfig, production: ModelVersion, at: datetime) -> FairnessReport:
        assert cfg.fairness is not None
        window = labelled_window(
            self._source(cfg, "inference"), self._source(cfg, "labels"),
            start=at - cfg.fairness.window, end=at, as_of=at,
            prediction_column=cfg.prediction_column, label_column=cfg.label_column,
            feature_columns=cfg.fairness.sensitive, version_column=cfg.version_column,
        )
        sensor = FairnessSensor.from_config(cfg.fairness, label_column=cfg.label_column,
                                            prediction_column=cfg.prediction_column,
                                            version_column=cfg.version_column)
        return sensor.score(window, version=production.version)

    def _measure_serving(self, cfg: ModelConfig) -> ServingHealth:
        assert self.serving_dir is not None
        target = target_for(cfg, self.serving_dir)
        assert target is not None  # the model has a serving section
        return target.health()

    def _measure_performance(self, cfg: ModelConfig, version: ModelVersion, at: datetime,
                             current: Frame) -> PerformanceReport:
        """Scores of the predictions ``version`` served (production's, or a canary's candidate's) in the window."""
        scores = [cfg.score_column] if cfg.score_column else []
        start = at - cfg.performance.window
        inference = self._inference_log(cfg, at, current)
        window = labelled_window(
            inference, self._source(cfg, "labels"),
            start=start, end=at, as_of=at,
            prediction_column=cfg.prediction_column, label_column=cfg.label_column,
            feature_columns=scores, version_column=cfg.version_column,
        )
        predictions = None
        if scores:  # the label-free estimate covers every prediction of the window, labelled or not
            columns = [*scores, *([cfg.version_column] if cfg.version_column else [])]
            predictions = inference.read(start, at, columns=columns)
        baseline = version.metrics.get("accuracy") if cfg.task == "classification" else None
        if isinstance(baseline, bool) or not isinstance(baseline, (int, float)):
            baseline = None
        return PerformanceSensor.from_config(cfg).score(window, version=version.version,
                                                        baseline_accuracy=baseline, predictions=predictions)

    def _inference_log(self, cfg: ModelConfig, at: datetime, current: Frame) -> TableSource:
        """The inference log, answering reads inside the drift window from the tick's current window (read once)."""
        source = self._source(cfg, "inference")
        try:
            return CachedWindow(source, current(), at - cfg.drift.window, at)
        except DataSourceError:  # the window cannot be read whole: the sensor reads what it needs itself
            return source

    def _source(self, cfg: ModelConfig, role: str) -> TableSource:
        key = (cfg.name, role)
        if key not in self._sources:
            self._sources[key] = self.source_factory(cfg.inference if role == "inference" else cfg.labels_source)
        return self._sources[key]

    def _measured(self, errors: list[StageError], rows: list[Row], cfg: ModelConfig, model_id: int,
                  at: datetime, sensor: str, measure: Callable[[], _T],
                  observe: Callable[[int, datetime, _T], Sequence[Row]]) -> _T | None:
        """Run one sensor of one model and add its rows; on failure, the error and perhaps the fallback rows."""
        try:
            report = measure()
        except Exception as exc:  # noqa: BLE001 - one model's failure must not stop the fleet
            message = f"{sensor.capitalize()} sensor for model {cfg.name} failed: {exc}"
            last = self._last_good.get((cfg.name, sensor))
            if last is not None and last.values and timedelta(0) <= at - last.at < cfg.fallback_for:
                rows += [observation_row(time=at, model_id=model_id, sensor=sensor, metric=metric, value=value)
                         for metric, value in last.values]
                message += f"; falling back to the value of {last.at.isoformat()}"
            _record(errors, StageError(cfg.name, sensor, message), traceback=not isinstance(exc, MapeError))
            return None
        written = observe(model_id, at, report)
        rows += written
        self._last_good[(cfg.name, sensor)] = _LastGood(at, _summary_values(written))
        return report

    @staticmethod
    def _guarded(errors: list[StageError], model: str, sensor: str, measure: Callable[[], _T]) -> _T | None:
        try:
            return measure()
        except Exception as exc:  # noqa: BLE001 - one model's failure must not stop the fleet
            _record(errors, StageError(model, sensor, f"{sensor.capitalize()} sensor for model {model} failed: {exc}"),
                    traceback=not isinstance(exc, MapeError))
            return None


def _record(errors: list[StageError], error: StageError, *, traceback: bool = False) -> None:
    logger.error(error.message, exc_info=traceback)
    errors.append(error)


# ---------------------------------------------------------------------- observation rows


def _summary_values(rows: Sequence[Row]) -> tuple[tuple[str, float | None], ...]:
    """The (metric, value) of the summary rows (labels ``{}``) among ``rows``."""
    values = []
    for row in rows:
        if isinstance(row, dict):
            if not row["labels"]:
                values.append((row["metric"], row["value"]))
        elif not row.labels:
            values.append((row.metric, row.value))
    return tuple(values)


def _value(value: float | int | bool | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def drift_observations(model_id: int, at: datetime, report: DriftReport) -> list[Observation]:
    """The ``drift.*`` rows of one report (see the module docstring)."""
    return [new_observation(**row) for row in _drift_rows(model_id, at, report)]


def _drift_rows(model_id: int, at: datetime, report: DriftReport) -> list[dict[str, Any]]:
    summary = {
        "drift.share_drifted": report.share_drifted,
        "drift.n_drifted": report.n_drifted,
        "drift.n_features": report.n_features,
        "drift.min_q_value": report.min_q_value,
        "drift.detected": report.detected,
        "drift.max_effect_size": report.max_effect_size,
        "drift.n_reference": report.n_reference,
        "drift.n_current": report.n_current,
    }
    rows = [observation_row(time=at, model_id=model_id, sensor="drift", metric=metric, value=_value(value))
            for metric, value in summary.items()]
    for feature in report.features:
        labels = {"feature": feature.feature, "test": feature.test}
        values = {"statistic": feature.statistic, "p_value": feature.p_value, "q_value": feature.q_value,
                  "drifted": feature.drifted}
        rows += [observation_row(time=at, model_id=model_id, sensor="drift", metric=f"drift.feature.{name}",
                                 value=_value(value), labels=dict(labels)) for name, value in values.items()]
        rows.append(observation_row(time=at, model_id=model_id, sensor="drift", metric="drift.feature.effect_size",
                                    value=_value(feature.effect_size), labels={**labels, "effect": feature.effect_name}))
    return rows


def reference_observations(model_id: int, at: datetime, reference: Reference) -> list[Observation]:
    """``drift.reference_version``: the stored reference the drift and quality sensors compared with (none: unstored)."""
    return [new_observation(**row) for row in _reference_rows(model_id, at, reference)]


def _reference_rows(model_id: int, at: datetime, reference: Reference) -> list[dict[str, Any]]:
    if reference.version is None:
        return []
    return [observation_row(time=at, model_id=model_id, sensor="drift", metric="drift.reference_version",
                            value=float(reference.version))]


def performance_observations(model_id: int, at: datetime, report: PerformanceReport) -> list[Observation]:
    """The ``performance.*`` rows of one report (see the module docstring)."""
    return [new_observation(**row) for row in _performance_rows(model_id, at, report)]


def _canary_rows(version: int, model_id: int, at: datetime, report: PerformanceReport) -> list[dict[str, Any]]:
    """The ``performance.*`` rows of a canary's candidate, named ``canary.*``, and ``canary.version``."""
    rows = [{**row, "sensor": "canary", "metric": "canary." + row["metric"].partition(".")[2]}
            for row in _performance_rows(model_id, at, report)]
    return [*rows, observation_row(time=at, model_id=model_id, sensor="canary", metric="canary.version",
                                   value=float(version), labels={})]


def _performance_rows(model_id: int, at: datetime, report: PerformanceReport) -> list[dict[str, Any]]:
    if report.task == "regression":
        values = {"performance.mae": report.mae, "performance.rmse": report.rmse}
    else:
        values = {"performance.accuracy": report.accuracy, "performance.precision": report.precision,
                  "performance.recall": report.recall, "performance.f1": report.f1,
                  "performance.accuracy_drop": report.accuracy_drop}
        if report.roc_auc is not None or report.log_loss is not None:
            values.update({"performance.roc_auc": report.roc_auc, "performance.log_loss": report.log_loss})
        if report.n_estimated:
            values.update({"performance.estimated_accuracy": report.estimated_accuracy,
                           "performance.estimated_accuracy_drop": report.estimated_accuracy_drop,
                           "performance.n_estimated": report.n_estimated})
    values["performance.n_labelled"] = report.n_labelled
    return [observation_row(time=at, model_id=model_id, sensor="performance", metric=metric, value=_value(value),
                            labels={}) for metric, value in values.items()]
