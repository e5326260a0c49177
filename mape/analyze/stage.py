"""The Analyze stage: turn observed metrics into open and closed Symptom rows.

Who calls it: the controller, once per tick after the Monitor stage, with the
same session, model ids and logical time. The planner reads the symptoms.

Each :class:`~mape.config.SymptomRule` works like a Prometheus alerting rule
with a ``for:`` clause, plus hysteresis. Only the summary observations of the
rule's metric count (empty labels), and only when this tick produced one
(observation time equal to ``at``) with a value; rows whose value is ``None``
mean "no data" and are skipped, never read as good or bad.

- No open symptom of the rule's kind: one opens when the newest ``for_ticks``
  values are all past ``enter`` (``value >= enter`` for direction "above",
  ``value <= enter`` for "below").
- An open symptom: ``last_seen_at`` moves to ``at`` while the newest value is on
  the bad side of ``exit``; it closes when the newest ``clear_ticks`` values
  are all on the good side of ``exit`` (``value < exit`` above,
  ``value > exit`` below).

Values between ``exit`` and ``enter`` neither open nor close, so a metric
hovering at the threshold does not flap. A model has at most one open
symptom per kind, and running a tick twice changes nothing the second time.

**Stale signals** are a symptom of their own, ``stale_signal`` (warning): it
opens when a sensor the Monitor runs for every model (``drift``,
``performance``) has written nothing for a model for longer than
``stale_after`` (its newest row is older than ``at - stale_after``), and
closes at the first tick where every such sensor is fresh again. A sensor that
has never written for the model is not stale (the Monitor says why it does not
measure it). The fallback values a failing sensor writes count as written, so
a failing sensor goes stale ``stale_after`` after its last fallback.

Every symptom names the observations it came from: ``evidence.opened_by``
(and ``closed_by``) lists each deciding observation's ``observation_id``,
time and value (for ``stale_signal``: the newest observation of each stale
sensor, with its sensor and metric).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlmodel import Session

from knowledge.queries import metric_series, open_symptom, open_symptoms
from knowledge.tables import Observation, Symptom, SymptomStatus
from mape._util.timeutil import ensure_utc
from mape.config import SymptomRule
from mape.errors import InvalidParameterError, MapeError

logger = logging.getLogger(__name__)

#: The symptom kind of a sensor that stopped writing.
STALE_SIGNAL = "stale_signal"
#: For each sensor the staleness check can watch, a summary metric every one of its reports writes, whatever the
#: data: its newest row is when the sensor last reported for the model.
FRESHNESS_METRICS: Mapping[str, str] = {"drift": "drift.n_current", "performance": "performance.n_labelled",
                                        "quality": "quality.n_current"}


@dataclass(frozen=True)
class SymptomView:
    """A symptom as the report shows it."""

    id: int
    kind: str
    severity: str
    status: str
    opened_at: datetime
    last_seen_at: datetime
    closed_at: datetime | None

    @classmethod
    def of(cls, symptom: Symptom) -> "SymptomView":
        assert symptom.id is not None
        return cls(id=symptom.id, kind=symptom.kind, severity=symptom.severity, status=symptom.status,
                   opened_at=symptom.opened_at, last_seen_at=symptom.last_seen_at, closed_at=symptom.closed_at)

    def __str__(self) -> str:
        return f"{self.kind} ({self.severity})"


@dataclass(frozen=True)
class ModelSymptoms:
    """Symptoms of one model after an Analyze pass: those it opened, those it closed, all still open."""

    model: str
    opened: tuple[SymptomView, ...] = ()
    closed: tuple[SymptomView, ...] = ()
    open: tuple[SymptomView, ...] = ()

    def __str__(self) -> str:
        def names(views: tuple[SymptomView, ...]) -> str:
            return ", ".join(str(v) for v in views) or "-"

        return f"model {self.model}: opened {names(self.opened)}; closed {names(self.closed)}; open {names(self.open)}"


@dataclass(frozen=True)
class AnalyzeError:
    """A rule that could not be evaluated for one model; the pass went on without it."""

    model: str
    symptom: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class AnalyzeReport:
    """The result of one Analyze pass."""

    at: datetime
    models: tuple[ModelSymptoms, ...]
    errors: tuple[AnalyzeError, ...] = ()

    def model(self, name: str) -> ModelSymptoms:
        """The symptoms of the model called ``name``."""
        for entry in self.models:
            if entry.model == name:
                return entry
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON values; ``opened`` and ``closed`` list ``"model: kind (severity)"`` across models."""
        def kinds(views: tuple[SymptomView, ...]) -> list[str]:
            return [view.kind for view in views]

        return {
            "at": self.at.isoformat(),
            "models": {e.model: {"opened": kinds(e.opened), "closed": kinds(e.closed), "open": kinds(e.open)}
                       for e in self.models},
            "opened": [f"{e.model}: {view}" for e in self.models for view in e.opened],
            "closed": [f"{e.model}: {view}" for e in self.models for view in e.closed],
            "errors": [str(error) for error in self.errors],
        }

    def __str__(self) -> str:
        lines = [f"analyze at {self.at.isoformat()}"]
        lines += [f"  {entry}" for entry in self.models]
        lines += [f"  error: {error}" for error in self.errors]
        return "\n".join(lines)


class Analyzer:
    """Evaluates symptom rules against the observations of every model.

    Parameters
    ----------
    rules : sequence of SymptomRule
        One rule per symptom kind.
    stale_after : timedelta or None, default 30 minutes
        A watched sensor with no observation of a model newer than this opens
        the model's ``stale_signal`` symptom (``Settings.stale_after``);
        ``None``: no staleness check.
    stale_sensors : sequence of str, default ("drift", "performance")
        The sensors watched: those the Monitor runs for every model (keys of
        :data:`FRESHNESS_METRICS`).

    Raises
    ------
    InvalidParameterError
        Two rules name the same symptom kind, a rule is named ``stale_signal``
        while staleness is checked, or a watched sensor is unknown.
    """

    def __init__(self, rules: Sequence[SymptomRule], *, stale_after: timedelta | None = timedelta(minutes=30),
                 stale_sensors: Sequence[str] = ("drift", "performance")) -> None:
        kinds = [rule.symptom for rule in rules]
        duplicates = sorted({kind for kind in kinds if kinds.count(kind) > 1})
        if duplicates:
            raise InvalidParameterError.for_parameter(
                "rules", "Analyzer", "a sequence of rules with distinct symptom kinds", duplicates
            )
        if stale_after is not None and STALE_SIGNAL in kinds:
            raise InvalidParameterError.for_parameter(
                "rules", "Analyzer", f"a sequence of rules without the kind {STALE_SIGNAL!r} (the staleness check's)",
                STALE_SIGNAL)
        if stale_after is not None and not stale_after > timedelta(0):
            raise InvalidParameterError.for_parameter("stale_after", "Analyzer", "a positive timedelta or None",
                                                      stale_after)
        if isinstance(stale_sensors, str) or not all(s in FRESHNESS_METRICS for s in stale_sensors):
            raise InvalidParameterError.for_parameter(
                "stale_sensors", "Analyzer", f"a sequence of sensors among {sorted(FRESHNESS_METRICS)}", stale_sensors)
        self.rules = tuple(rules)
        self.stale_after = stale_after
        self.stale_sensors = tuple(stale_sensors)

    def run(self, session: Session, model_ids: Mapping[str, int], at: datetime) -> AnalyzeReport:
        """Open, refresh and close symptoms at logical time ``at`` (flushed, not committed)."""
        at = ensure_utc(at)
        entries: list[ModelSymptoms] = []
        errors: list[AnalyzeError] = []
        for name, model_id in model_ids.items():
            opened: list[SymptomView] = []
            closed: list[SymptomView] = []
            for rule in self.rules:
                try:
                    change, symptom = self._apply(session, model_id, rule, at)
                except Exception as exc:  # noqa: BLE001 - one rule's failure must not stop the others
                    error = AnalyzeError(name, rule.symptom,
                                         f"Rule {rule.symptom} for model {name} failed: {exc}")
                    logger.error(error.message, exc_info=not isinstance(exc, MapeError))
                    errors.append(error)
                    continue
                if change is not None and symptom is not None:
                    (opened if change == "opened" else closed).append(SymptomView.of(symptom))
            if self.stale_after is not None:
                try:
                    change, symptom = self._apply_staleness(session, model_id, at, self.stale_after)
                except Exception as exc:  # noqa: BLE001 - like a rule: logged, the pass goes on
                    error = AnalyzeError(name, STALE_SIGNAL, f"Staleness check for model {name} failed: {exc}")
                    logger.error(error.message, exc_info=not isinstance(exc, MapeError))
                    errors.append(error)
                    change, symptom = None, None
                if change is not None and symptom is not None:
                    (opened if change == "opened" else closed).append(SymptomView.of(symptom))
            still_open = tuple(SymptomView.of(s) for s in open_symptoms(session, model_id))
            entries.append(ModelSymptoms(name, tuple(opened), tuple(closed), still_open))
        return AnalyzeReport(at=at, models=tuple(entries), errors=tuple(errors))

    def _apply(self, session: Session, model_id: int, rule: SymptomRule,
               at: datetime) -> tuple[Literal["opened", "closed"] | None, Symptom | None]:
        values = _recent_values(session, model_id, rule, at)
        if not values:
            return None, None
        symptom = open_symptom(session, model_id, rule.symptom)
        if symptom is None:
            streak = values[: rule.for_ticks]
            if len(streak) == rule.for_ticks and all(_past_enter(rule, o.value) for o in streak):
                symptom = Symptom(model_id=model_id, kind=rule.symptom, severity=rule.severity,
                                  status=SymptomStatus.open.value, opened_at=at, last_seen_at=at,
                                  evidence={"rule": _rule_evidence(rule), "opened_by": _evidence(streak)})
                session.add(symptom)
                session.flush()
                logger.info("Symptom %s of model_id=%s opened at %s.", rule.symptom, model_id, at.isoformat())
                return "opened", symptom
            return None, None
        if not _good_side_of_exit(rule, values[0].value):
            symptom.last_seen_at = at
        streak = values[: rule.clear_ticks]
        if len(streak) == rule.clear_ticks and all(_good_side_of_exit(rule, o.value) for o in streak):
            symptom.status = SymptomStatus.closed.value
            symptom.closed_at = at
            symptom.evidence = {**symptom.evidence, "closed_by": _evidence(streak)}
            session.add(symptom)
            session.flush()
            logger.info("Symptom %s of model_id=%s closed at %s.", rule.symptom, model_id, at.isoformat())
            return "closed", symptom
        session.add(symptom)
        session.flush()
        return None, symptom


    def _apply_staleness(self, session: Session, model_id: int, at: datetime,
                         stale_after: timedelta) -> tuple[Literal["opened", "closed"] | None, Symptom | None]:
        newest: dict[str, Observation] = {}
        for sensor in self.stale_sensors:
            rows = metric_series(session, model_id, FRESHNESS_METRICS[sensor], limit=1, until=at)
            if rows:
                newest[sensor] = rows[0]
        stale = {sensor: o for sensor, o in newest.items() if ensure_utc(o.time) < at - stale_after}
        symptom = open_symptom(session, model_id, STALE_SIGNAL)
        if symptom is None:
            if not stale:
                return None, None
            symptom = Symptom(model_id=model_id, kind=STALE_SIGNAL, severity="warning",
                              status=SymptomStatus.open.value, opened_at=at, last_seen_at=at,
                              evidence={"rule": {"stale_after_seconds": stale_after.total_seconds(),
                                                 "sensors": list(self.stale_sensors)},
                                        "stale_sensors": sorted(stale),
                                        "opened_by": _freshness_evidence(stale, at)})
            session.add(symptom)
            session.flush()
            logger.info("Symptom %s of model_id=%s opened at %s: no observation of %s since %s.", STALE_SIGNAL,
                        model_id, at.isoformat(), ", ".join(sorted(stale)),
                        min(ensure_utc(o.time) for o in stale.values()).isoformat())
            return "opened", symptom
        if stale:
            symptom.last_seen_at = at
            symptom.evidence = {**symptom.evidence, "stale_sensors": sorted(stale)}
            session.add(symptom)
            session.flush()
            return None, symptom
        symptom.status = SymptomStatus.closed.value
        symptom.closed_at = at
        symptom.evidence = {**symptom.evidence, "stale_sensors": [], "closed_by": _freshness_evidence(newest, at)}
        session.add(symptom)
        session.flush()
        logger.info("Symptom %s of model_id=%s closed at %s.", STALE_SIGNAL, model_id, at.isoformat())
        return "closed", symptom


def _freshness_evidence(newest: Mapping[str, Observation], at: datetime) -> list[dict[str, Any]]:
    """By sensor: its newest observation (the id, metric and time) and how old it is at ``at``."""
    return [{"sensor": sensor, "metric": o.metric, "observation_id": o.id, "time": ensure_utc(o.time).isoformat(),
             "age_seconds": (at - ensure_utc(o.time)).total_seconds()} for sensor, o in sorted(newest.items())]


def _recent_values(session: Session, model_id: int, rule: SymptomRule, at: datetime) -> list[Observation]:
    """This tick's and the preceding summary values of the rule's metric, newest first; empty without one at ``at``."""
    depth = max(rule.for_ticks, rule.clear_ticks)
    # no ``labels`` filter: an empty one matches every row, and made metric_series read 200 times the limit, a cost
    # that grew with the knowledge base's history (48 ms a rule and model at 4,000 ticks; docs/DESIGN.md, fleet scale)
    rows = [o for o in metric_series(session, model_id, rule.metric, limit=4 * depth + 4, until=at)
            if not o.labels]
    if not rows or ensure_utc(rows[0].time) != at or rows[0].value is None:
        return []
    return [o for o in rows if o.value is not None][:depth]


def _past_enter(rule: SymptomRule, value: float | None) -> bool:
    assert value is not None
    return value >= rule.enter if rule.direction == "above" else value <= rule.enter


def _good_side_of_exit(rule: SymptomRule, value: float | None) -> bool:
    assert value is not None
    return value < rule.exit if rule.direction == "above" else value > rule.exit


def _rule_evidence(rule: SymptomRule) -> dict[str, Any]:
    return {"metric": rule.metric, "direction": rule.direction, "enter": rule.enter, "exit": rule.exit,
            "for_ticks": rule.for_ticks, "clear_ticks": rule.clear_ticks}


def _evidence(observations: Sequence[Observation]) -> list[dict[str, Any]]:
    """Oldest first: the values that decided, with their observation ids and times."""
    return [{"observation_id": o.id, "time": ensure_utc(o.time).isoformat(), "value": o.value}
            for o in reversed(observations)]
