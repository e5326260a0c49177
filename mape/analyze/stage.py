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

**Reads.** A pass reads the fleet at once: one query for the open symptoms
of all models, one for the newest tick times, and one for every rule's and
freshness metric's rows of all models since the ``max(for, clear) + 2``-th
newest tick. A series whose rows there do not settle it (fewer values than
the rule needs, or no row of a freshness metric: a sparse or stale sensor) is
read on its own, as deep as before, so the outcome never depends on the
bound; a steady fleet needs no such read (docs/DESIGN.md, "Analyze at fleet
scale").

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

from knowledge.queries import metric_rows_fleet, metric_series, open_symptoms_fleet, recent_tick_times
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
        ids = list(model_ids.values())
        rows = self._recent_rows(session, ids, at)
        open_now = {model_id: {s.kind: s for s in symptoms}
                    for model_id, symptoms in open_symptoms_fleet(session, ids).items()}
        for name, model_id in model_ids.items():
            opened: list[SymptomView] = []
            closed: list[SymptomView] = []
            symptoms = open_now.setdefault(model_id, {})
            for rule in self.rules:
                try:
                    window = None if rows is None else rows.get((model_id, rule.metric), ())
                    values = _recent_values(session, model_id, rule, at, window)
                    change, symptom = self._apply(session, model_id, rule, at, values, symptoms.get(rule.symptom))
                except Exception as exc:  # noqa: BLE001 - one rule's failure must not stop the others
                    error = AnalyzeError(name, rule.symptom,
                                         f"Rule {rule.symptom} for model {name} failed: {exc}")
                    logger.error(error.message, exc_info=not isinstance(exc, MapeError))
                    errors.append(error)
                    continue
                _track(symptoms, rule.symptom, change, symptom, opened, closed)
            if self.stale_after is not None:
                try:
                    newest = self._newest(session, model_id, at, rows)
                    change, symptom = self._apply_staleness(session, model_id, at, self.stale_after, newest,
                                                            symptoms.get(STALE_SIGNAL))
                except Exception as exc:  # noqa: BLE001 - like a rule: logged, the pass goes on
                    error = AnalyzeError(name, STALE_SIGNAL, f"Staleness check for model {name} failed: {exc}")
                    logger.error(error.message, exc_info=not isinstance(exc, MapeError))
                    errors.append(error)
                    change, symptom = None, None
                _track(symptoms, STALE_SIGNAL, change, symptom, opened, closed)
            still_open = tuple(SymptomView.of(s) for s in sorted(symptoms.values(), key=lambda s: (s.opened_at, s.id)))
            entries.append(ModelSymptoms(name, tuple(opened), tuple(closed), still_open))
        session.flush()
        return AnalyzeReport(at=at, models=tuple(entries), errors=tuple(errors))

    def _recent_rows(self, session: Session, model_ids: Sequence[int],
                     at: datetime) -> dict[tuple[int, str], list[Any]] | None:
        """The rules' and freshness metrics' rows of every model since the ``depth + 2``-th newest tick (one query).

        ``None`` when no tick is recorded (an Analyzer run outside a controller's
        tick): every series is then read on its own.
        """
        metrics = {rule.metric for rule in self.rules}
        if self.stale_after is not None:
            metrics |= {FRESHNESS_METRICS[sensor] for sensor in self.stale_sensors}
        depth = max((max(rule.for_ticks, rule.clear_ticks) for rule in self.rules), default=1)
        ticks = recent_tick_times(session, until=at, n=depth + 2)
        if not ticks:
            return None
        return metric_rows_fleet(session, model_ids, sorted(metrics), since=ticks[-1], until=at)

    def _newest(self, session: Session, model_id: int, at: datetime,
                rows: Mapping[tuple[int, str], list[Any]] | None) -> dict[str, Any]:
        """By watched sensor, the newest row of its freshness metric (any labels), at or before ``at``."""
        newest: dict[str, Any] = {}
        for sensor in self.stale_sensors:
            metric = FRESHNESS_METRICS[sensor]
            # not in the last ticks: stale, or never written; only the series itself can tell
            found = (rows or {}).get((model_id, metric)) or metric_series(session, model_id, metric, limit=1, until=at)
            if found:
                newest[sensor] = found[0]
        return newest

    def _apply(self, session: Session, model_id: int, rule: SymptomRule, at: datetime, values: Sequence[Any],
               symptom: Symptom | None) -> tuple[Literal["opened", "closed"] | None, Symptom | None]:
        if not values:
            return None, None
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
        return None, symptom

    def _apply_staleness(self, session: Session, model_id: int, at: datetime, stale_after: timedelta,
                         newest: Mapping[str, Any], symptom: Symptom | None,
                         ) -> tuple[Literal["opened", "closed"] | None, Symptom | None]:
        stale = {sensor: o for sensor, o in newest.items() if ensure_utc(o.time) < at - stale_after}
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


def _track(symptoms: dict[str, Symptom], kind: str, change: Literal["opened", "closed"] | None,
           symptom: Symptom | None, opened: list[SymptomView], closed: list[SymptomView]) -> None:
    """Keep a model's open symptoms by kind current after one rule, and note what it opened or closed."""
    if change is None or symptom is None:
        return
    if change == "opened":
        symptoms[kind] = symptom
        opened.append(SymptomView.of(symptom))
    else:
        symptoms.pop(kind, None)
        closed.append(SymptomView.of(symptom))


def _freshness_evidence(newest: Mapping[str, Any], at: datetime) -> list[dict[str, Any]]:
    """By sensor: its newest observation (the id, metric and time) and how old it is at ``at``."""
    return [{"sensor": sensor, "metric": o.metric, "observation_id": o.id, "time": ensure_utc(o.time).isoformat(),
             "age_seconds": (at - ensure_utc(o.time)).total_seconds()} for sensor, o in sorted(newest.items())]


def _recent_values(session: Session, model_id: int, rule: SymptomRule, at: datetime,
                   window: Sequence[Any] | None = None) -> list[Any]:
    """This tick's and the preceding summary values of the rule's metric, newest first; empty without one at ``at``.

    ``window``: the series' rows of the last ticks, newest first, when the
    pass read them for the fleet (empty: none there, so none at ``at``); used
    when they settle the answer (no summary value at ``at``, or
    ``max(for, clear)`` values), else the series is read here.
    """
    depth = max(rule.for_ticks, rule.clear_ticks)
    if window is not None:
        rows = [o for o in window if not o.labels]
        if not rows or ensure_utc(rows[0].time) != at or rows[0].value is None:
            return []
        values = [o for o in rows if o.value is not None]
        if len(values) >= depth:
            return values[:depth]
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
