"""Policy unit tests: YAML files of ticks and expected decisions, run through the real planner.

What it does: a policy test file (``*.test.yaml`` next to the policies; the
policy loader skips these names) lists the policies under test and a few
tests. Each test describes one model's world tick by tick (summary signals,
open symptoms, model versions, action runs in flight) and the decisions the
planner must write at each tick. :func:`run_policy_tests` runs every test on
a fresh, migrated SQLite knowledge base with the real
:class:`~mape.plan.planner.Planner`, so cooldowns, priorities, busy models and
whatever else the planner decides from its tables behave exactly as in
production. In the spirit of ``promtool test rules`` and ``opa test``::

    policies: [retrain-on-drift.yaml]        # relative to the test file
    tests:
      - name: lasting drift with an accuracy drop retrains
        model: {name: credit-risk, labels: {team: risk}}
        interval: 1h
        ticks:
          - signals: {performance.accuracy_drop: 0.05}
            symptoms: [data_drift]
            expect: []
          - {}                               # the same world one hour later
          - expect: [{policy: retrain-on-drift, action: retrain, status: proposed}]

The format, field by field, is in ``policies/README.md`` ("Testing your
policy") and in the pydantic models below.

Who calls it: ``mape policy test`` (:mod:`mape.cli`), and the test suite,
which runs every ``policies/*.test.yaml``.
"""

from __future__ import annotations

import difflib
import json
import os
import tempfile
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlmodel import Session

from knowledge import queries, registry
from knowledge.database import create_engine_for, session_scope
from knowledge.migrate import upgrade
from knowledge.tables import (
    ActionRun,
    ActionState,
    Decision,
    DecisionStatus,
    ManagedModel,
    Observation,
    Stage,
    Symptom,
    SymptomStatus,
)
from mape._util.timeutil import ensure_utc, parse_duration
from mape.errors import MapeError, PolicyError
from mape.plan.context import METRIC_ROOTS, build_context
from mape.plan.fields import CONTEXT_FIELDS, SCORE_METRICS
from mape.plan.loader import LoadedPolicy, is_policy_file, load_policy_text
from mape.plan.planner import Planner

__all__ = [
    "DEFAULT_START",
    "DecisionOutcome",
    "PolicyTestReport",
    "PolicyTestResult",
    "TickFailure",
    "is_policy_test_file",
    "run_policy_tests",
]

TEST_SUFFIXES = (".test.yaml", ".test.yml")
#: The first tick of a test without ``start``: a Monday, midnight UTC.
DEFAULT_START = datetime(2026, 1, 5, tzinfo=timezone.utc)
ACTOR = "policy-test"

DecisionStatusName = Literal[tuple(s.value for s in DecisionStatus)]  # type: ignore[valid-type]
ActionStateName = Literal[tuple(s.value for s in ActionState)]  # type: ignore[valid-type]


def is_policy_test_file(path: Path) -> bool:
    """Whether a file is a policy test file: ``*.test.yaml`` or ``*.test.yml``, not starting with ``_`` or ``.``.

    >>> [is_policy_test_file(Path(n)) for n in ("retrain.test.yaml", "retrain.yaml", "_wip.test.yaml")]
    [True, False, False]
    """
    return path.name.endswith(TEST_SUFFIXES) and not path.name.startswith(("_", "."))


# --------------------------------------------------------------------------------------------- the format


def _duration(value: Any) -> timedelta:
    return parse_duration(value)


def _moment(value: Any) -> datetime | timedelta:
    """An absolute time (a YAML timestamp or ISO 8601 string) or a signed offset such as ``-3h``."""
    if isinstance(value, datetime):
        return ensure_utc(value)
    if isinstance(value, str) and value.strip()[:1] in ("-", "+"):
        text = value.strip()
        offset = parse_duration(text[1:])
        return -offset if text[0] == "-" else offset
    if isinstance(value, str):
        try:
            return ensure_utc(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
        except ValueError:
            pass  # not an ISO 8601 time: the error below names the accepted forms
    raise ValueError(f"{value!r} is neither a time (2026-01-05T10:00:00Z) nor an offset such as -3h or +30m")


def _resolve(moment: datetime | timedelta, origin: datetime) -> datetime:
    return origin + moment if isinstance(moment, timedelta) else moment


def gate_evaluation(promotion: Mapping[str, float]) -> dict[str, Any]:
    """A stored gate evaluation whose ``promotion`` root (:func:`mape.plan.context.promotion_root`) is ``promotion``.

    >>> from mape.plan.context import promotion_root
    >>> fields = {"replaced_version": 1, "accuracy": 0.9, "demographic_parity_difference": 0.12,
    ...           "replaced_demographic_parity_difference": 0.25}
    >>> promotion_root(gate_evaluation(fields)) == fields
    True
    """
    evaluation: dict[str, Any] = {"candidate": {}, "champion": {}, "fairness": {"gaps": {}}}
    for name, value in promotion.items():
        if name == "replaced_version":
            evaluation["champion_version"] = int(value)
        elif name == "n":
            evaluation["n"] = int(value)
        else:
            replaced = name.startswith("replaced_")
            metric = name.removeprefix("replaced_")
            side = "champion" if replaced else "candidate"
            if metric in SCORE_METRICS:
                evaluation[side][metric] = value
            else:
                evaluation["fairness"]["gaps"].setdefault(metric, {})[side] = value
    return evaluation


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class ModelSpec(_Strict):
    """The managed model of a test: its name and labels (what selectors see)."""

    name: str = Field("model", min_length=1, max_length=200)
    labels: dict[str, str] = Field(default_factory=dict)


class VersionSpec(_Strict):
    """One model version in the registry before the first tick.

    Versions are numbered 1, 2, ... in list order (``version``, if given,
    must say the same). Versions with ``promoted_at`` are promoted in the
    order of that time: the last is in production, the earlier ones are
    archived, so they are rollback targets (``model.can_roll_back``).
    """

    version: int | None = Field(None, ge=1)
    promoted_at: datetime | timedelta | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    promotion: dict[str, float] | None = Field(
        None, description="What the promotion gate measured when this version was promoted, as policies read it "
                          "(promotion.<name>): e.g. {replaced_version: 1, demographic_parity_difference: 0.12, "
                          "replaced_demographic_parity_difference: 0.25}.")
    stage: Literal["candidate", "rejected"] | None = None

    @field_validator("promotion")
    @classmethod
    def _promotion_fields(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        declared = CONTEXT_FIELDS["promotion"].fields or frozenset()
        for name in value or {}:
            if name not in declared:
                close = difflib.get_close_matches(name, sorted(declared), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"promotion.{name} is not a field of promotion{hint}; it has: "
                                 f"{', '.join(sorted(declared))}")
        return value

    _t = field_validator("promoted_at", mode="before")(lambda v: None if v is None else _moment(v))

    @model_validator(mode="after")
    def _stage_or_promotion(self) -> "VersionSpec":
        if self.stage is not None and self.promoted_at is not None:
            raise ValueError("a version is either promoted (promoted_at) or given a stage, not both")
        return self


class SymptomSpec(_Strict):
    """An open symptom: its kind, severity, and when it opened (default: the first tick that lists it)."""

    kind: str = Field(min_length=1, max_length=100)
    severity: Literal["info", "warning", "critical"] = "warning"
    since: datetime | timedelta | None = None

    _t = field_validator("since", mode="before")(lambda v: None if v is None else _moment(v))


class ActionRunSpec(_Strict):
    """The state of an action run of the model from this tick on (``running`` makes the model busy)."""

    action: str = Field(min_length=1, max_length=50)
    state: ActionStateName  # type: ignore[valid-type]


class ExpectedDecision(_Strict):
    """A decision the planner must write at a tick. Unset fields are not compared."""

    policy: str = Field(min_length=1)
    action: str | None = None
    status: DecisionStatusName  # type: ignore[valid-type]
    reason: str | None = Field(None, description="A substring of the decision's reason.")

    def __str__(self) -> str:
        action = f" -> {self.action}" if self.action else ""
        reason = f", reason containing {self.reason!r}" if self.reason else ""
        return f"{self.policy}{action} ({self.status}{reason})"


class TickSpec(_Strict):
    """One tick: the world at that time, and the decisions expected from it.

    ``signals`` and ``symptoms``, when left out, stay as they were at the
    previous tick (signals are observed again, fresh). ``expect`` left out is
    not checked; ``expect: []`` means no decision at all.
    """

    advance: timedelta | None = None
    signals: dict[str, Union[float, bool, None]] | None = None
    symptoms: list[Union[str, SymptomSpec]] | None = None
    actions: list[ActionRunSpec] = Field(default_factory=list)
    promote: int | None = Field(None, ge=1)
    expect: list[ExpectedDecision] | None = None

    _d = field_validator("advance", mode="before")(lambda v: None if v is None else _duration(v))

    @field_validator("advance")
    @classmethod
    def _forward(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("must be a positive duration: ticks only move forward")
        return value

    @field_validator("signals")
    @classmethod
    def _signal_names(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        for name in value or {}:
            root, dot, key = name.partition(".")
            if not dot or not key or root not in METRIC_ROOTS:
                raise ValueError(f"signal {name!r}: name signals <root>.<key>, with root "
                                 f"{', '.join(METRIC_ROOTS)} (e.g. drift.share_drifted)")
        return value

    @field_validator("symptoms")
    @classmethod
    def _unique_kinds(cls, value: list[Any] | None) -> list[Any] | None:
        kinds = [s if isinstance(s, str) else s.kind for s in value or []]
        repeated = sorted({k for k in kinds if kinds.count(k) > 1})
        if repeated:
            raise ValueError(f"symptom {repeated[0]!r} listed twice")
        return value

    @field_validator("expect")
    @classmethod
    def _unique_policies(cls, value: list[ExpectedDecision] | None) -> list[ExpectedDecision] | None:
        names = [e.policy for e in value or []]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"policy {repeated[0]!r} expected twice: a policy decides once per model and tick")
        return value


class PolicyTestCase(_Strict):
    """One test: a model, its starting registry, and ticks ``interval`` apart starting at ``start``."""

    name: str = Field(min_length=1)
    model: ModelSpec = Field(default_factory=ModelSpec)
    start: datetime = DEFAULT_START
    interval: timedelta = timedelta(hours=1)
    signal_max_age: timedelta | None = None
    versions: list[VersionSpec] = Field(default_factory=list)
    ticks: list[TickSpec] = Field(min_length=1)

    _s = field_validator("start", mode="before")(lambda v: _absolute(v))
    _d = field_validator("interval", "signal_max_age", mode="before")(lambda v: None if v is None else _duration(v))

    @model_validator(mode="after")
    def _checks(self) -> "PolicyTestCase":
        if self.interval <= timedelta(0):
            raise ValueError("interval: must be a positive duration")
        if self.ticks[0].advance is not None:
            raise ValueError("ticks[0].advance: the first tick is at start; advance only later ticks")
        if all(t.expect is None for t in self.ticks):
            raise ValueError("ticks: no tick has an expect, so the test could never fail")
        for index, version in enumerate(self.versions):
            if version.version is not None and version.version != index + 1:
                raise ValueError(f"versions[{index}].version: versions are numbered in list order; "
                                 f"this one is {index + 1}, not {version.version}")
        return self

    @property
    def max_age(self) -> timedelta:
        """As in production: by default only this tick's measurements are fresh (half the interval)."""
        return self.signal_max_age if self.signal_max_age is not None else self.interval / 2


def _absolute(value: Any) -> datetime:
    moment = _moment(value)
    if isinstance(moment, timedelta):
        raise ValueError(f"{value!r}: start must be a time such as 2026-01-05T00:00:00Z, not an offset")
    return moment


class PolicyTestFile(_Strict):
    """A policy test file: the policies under test (files or directories) and the tests."""

    policies: list[str] = Field(min_length=1)
    tests: list[PolicyTestCase] = Field(min_length=1)

    @field_validator("tests")
    @classmethod
    def _unique_names(cls, value: list[PolicyTestCase]) -> list[PolicyTestCase]:
        names = [t.name for t in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"test name {repeated[0]!r} used twice")
        return value


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class DecisionOutcome:
    """A decision the planner wrote at a tick, as a test sees it."""

    id: int | None
    policy: str
    action: str
    status: str
    reason: str

    def matches(self, expected: ExpectedDecision) -> bool:
        return (self.policy == expected.policy and self.status == expected.status
                and (expected.action is None or self.action == expected.action)
                and (expected.reason is None or expected.reason in self.reason))

    def __str__(self) -> str:
        reason = f": {self.reason}" if self.reason else ""
        return f"{self.policy} -> {self.action} ({self.status}){reason}"


@dataclass
class TickFailure:
    """A tick whose decisions differ from its ``expect``.

    Parameters
    ----------
    index : int
        Position of the tick in ``ticks`` (0-based, as in the file's field paths).
    at : datetime
        The tick's time.
    expected, got : list
        The expected and the written decisions.
    errors : list of str
        The planner's evaluation errors at this tick (a missing signal, ...).
    context : dict
        The evaluation context the planner saw, for finding out why.
    """

    index: int
    at: datetime
    expected: list[ExpectedDecision]
    got: list[DecisionOutcome]
    errors: list[str] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)

    def diff(self) -> Iterator[str]:
        """``-`` lines for expected decisions not written, ``+`` for written ones not expected, by policy."""
        got = {d.policy: d for d in self.got}
        expected = {e.policy: e for e in self.expected}
        for name in sorted(set(got) | set(expected)):
            want, have = expected.get(name), got.get(name)
            if want is not None and have is not None and have.matches(want):
                continue
            yield f"- expected: {want}" if want is not None else "- expected: no decision"
            yield f"+ got:      {have}" if have is not None else "+ got:      no decision"

    def lines(self) -> Iterator[str]:
        yield f"ticks[{self.index}] at {self.at.isoformat()}:"
        for line in self.diff():
            yield f"  {line}"
        for error in self.errors:
            yield f"  note: {error}"
        yield f"  context: {json.dumps(self.context, sort_keys=True, default=str)}"

    def __str__(self) -> str:
        return "\n".join(self.lines())


@dataclass
class PolicyTestResult:
    """The outcome of one test: passed, or the ticks that failed (or the error that stopped it)."""

    file: str
    name: str
    ticks: int = 0
    failures: list[TickFailure] = field(default_factory=list)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return not self.failures and self.error is None

    def lines(self) -> Iterator[str]:
        yield f"{'PASS' if self.passed else 'FAIL'}  {self.file}: {self.name}"
        if self.error is not None:
            yield f"    error: {self.error}"
        for failure in self.failures:
            for line in failure.lines():
                yield f"    {line}"

    def __str__(self) -> str:
        return "\n".join(self.lines())


@dataclass
class PolicyTestReport:
    """What :func:`run_policy_tests` found.

    Parameters
    ----------
    results : list of PolicyTestResult
        One per test, in file order.
    errors : list of PolicyError
        Test files that could not be run at all (bad format, a policy that
        does not load), each naming the file and field.
    """

    results: list[PolicyTestResult] = field(default_factory=list)
    errors: list[PolicyError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and bool(self.results) and all(r.passed for r in self.results)

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def failed(self) -> int:
        return len(self.results) - self.passed

    def extend(self, other: "PolicyTestReport") -> "PolicyTestReport":
        self.results.extend(other.results)
        self.errors.extend(other.errors)
        return self

    def lines(self) -> Iterator[str]:
        for result in self.results:
            yield from result.lines()
        for error in self.errors:
            yield f"ERROR {error}"
        yield str(self)

    def __str__(self) -> str:
        errors = f", {len(self.errors)} file error{'' if len(self.errors) == 1 else 's'}" if self.errors else ""
        return f"{self.passed} passed, {self.failed} failed{errors}"


# --------------------------------------------------------------------------------------------- running


#: Every field name of the format, for suggesting one when a name is misspelt.
_FIELD_NAMES = frozenset(name for model in (PolicyTestFile, PolicyTestCase, ModelSpec, VersionSpec, TickSpec,
                                             SymptomSpec, ActionRunSpec, ExpectedDecision)
                         for name in model.model_fields)
#: What pydantic puts in an error's location for the member of a union; not field names.
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "datetime", "timedelta", "list", "dict"})


def _field_path(loc: Sequence[Any]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif not (isinstance(item, str) and (item[:1].isupper() or "[" in item or item in _TYPE_TAGS)):
            parts.append(("." if parts else "") + str(item))  # drop pydantic's union-member tags
    return "".join(parts)


def _read_test_file(path: Path) -> PolicyTestFile:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read the file: {exc}", source=source) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"not valid YAML: {' '.join(str(exc).split())}", source=source) from None
    if not isinstance(data, dict):
        raise PolicyError("a policy test file is a mapping with policies and tests", source=source)
    try:
        return PolicyTestFile.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # of a union's alternatives, the one that got furthest into the value says what is wrong
        error = max(errors, key=lambda e: len(e["loc"]))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(error["loc"][-1]), sorted(_FIELD_NAMES), n=1)
            message = "unknown field" + (f" (did you mean {close[0]!r}?)" if close else "")
        chosen = _field_path(error["loc"])
        others = {p for p in (_field_path(e["loc"]) for e in errors) if not chosen.startswith(p)}
        extra = f" (and {len(others)} more problem{'' if len(others) == 1 else 's'})" if others else ""
        raise PolicyError(message + extra, source=source, field=_field_path(error["loc"]) or None) from None


def _policy_files(path: Path, spec: PolicyTestFile) -> Iterator[tuple[str, Path]]:
    for index, entry in enumerate(spec.policies):
        target = path.parent / entry
        if target.is_dir():
            for file in sorted(p for p in target.iterdir() if p.is_file() and is_policy_file(p)):
                yield f"policies[{index}]", file
        else:
            yield f"policies[{index}]", target


def _load_policies(path: Path, spec: PolicyTestFile, known_actions: Collection[str] | None) -> list[LoadedPolicy]:
    policies: list[LoadedPolicy] = []
    for where, file in _policy_files(path, spec):
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"cannot read policy file {str(file)!r}: {getattr(exc, 'strerror', None) or exc}",
                              source=str(path), field=where) from None
        try:
            policies.append(load_policy_text(text, source=file, known_actions=known_actions))
        except MapeError as exc:
            raise PolicyError(f"the policy does not load: {exc}", source=str(path), field=where) from None
    return policies


class _SetupError(Exception):
    """A tick asks for something the test's world cannot do (promote a version that does not exist, ...)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class _World:
    """The knowledge-base rows of one test's model, changed tick by tick as the test file says."""

    def __init__(self, session: Session, case: PolicyTestCase) -> None:
        self.session = session
        self.case = case
        self.model: ManagedModel = registry.upsert_model(session, name=case.model.name, labels=case.model.labels,
                                                         actor=ACTOR)
        assert self.model.id is not None
        self.model_id: int = self.model.id
        self.signals: dict[str, float | bool | None] = {}
        self.symptoms: dict[str, Symptom] = {}
        self._versions(case.start)

    def _versions(self, start: datetime) -> None:
        rows = [registry.register_version(self.session, model_id=self.model_id, artifact_uri=f"test://v{i + 1}",
                                          metrics=dict(v.metrics), actor=ACTOR)
                for i, v in enumerate(self.case.versions)]
        promoted = sorted(((_resolve(v.promoted_at, start), i) for i, v in enumerate(self.case.versions)
                           if v.promoted_at is not None))
        for at, index in promoted:
            promotion = self.case.versions[index].promotion
            registry.promote(self.session, rows[index], actor=ACTOR, reason="policy test setup", at=at,
                             evaluation=None if promotion is None else gate_evaluation(promotion))
        for row, spec in zip(rows, self.case.versions):
            if spec.stage == "rejected":
                row.stage = Stage.rejected.value
                self.session.add(row)
        self.session.flush()

    def apply(self, tick: TickSpec, at: datetime, where: str) -> None:
        if tick.promote is not None:
            self._promote(tick.promote, at, where)
        if tick.signals is not None:
            self.signals = dict(tick.signals)
        self.session.add_all(Observation(time=at, model_id=self.model_id, sensor=ACTOR, metric=name,
                                         value=None if value is None else float(value))
                             for name, value in self.signals.items())
        if tick.symptoms is not None:
            self._symptoms(tick.symptoms, at, where)
        for symptom in self.symptoms.values():
            symptom.last_seen_at = at
            self.session.add(symptom)
        for run in tick.actions:
            self._action(run, at)
        self.session.flush()

    def _promote(self, number: int, at: datetime, where: str) -> None:
        versions = {v.version: v for v in registry.versions(self.session, self.model_id)}
        if number not in versions:
            raise _SetupError(f"no version {number}; the test's versions are {sorted(versions) or 'none'}",
                              field=f"{where}.promote")
        registry.promote(self.session, versions[number], actor=ACTOR, reason="policy test", at=at)

    def _symptoms(self, listed: list[str | SymptomSpec], at: datetime, where: str) -> None:
        wanted = {s.kind if isinstance(s, SymptomSpec) else s: s if isinstance(s, SymptomSpec) else SymptomSpec(kind=s)
                  for s in listed}
        for kind in sorted(set(self.symptoms) - set(wanted)):
            symptom = self.symptoms.pop(kind)
            symptom.status = SymptomStatus.closed.value
            symptom.closed_at = at
            self.session.add(symptom)
        for kind, spec in wanted.items():
            symptom = self.symptoms.get(kind)
            if symptom is None:
                opened = _resolve(spec.since, at) if spec.since is not None else at
                if opened > at:
                    raise _SetupError(f"symptom {kind!r} cannot open after the tick that lists it",
                                      field=f"{where}.symptoms")
                symptom = Symptom(model_id=self.model_id, kind=kind, severity=spec.severity, opened_at=opened,
                                  last_seen_at=at, evidence={"source": ACTOR})
                self.symptoms[kind] = symptom
            symptom.severity = spec.severity
            self.session.add(symptom)

    def _action(self, spec: ActionRunSpec, at: datetime) -> None:
        """Set the state of the model's in-flight run of this action type, or start one.

        A new run belongs to the newest decision to take this action that has
        no run yet (as the executor would dispatch it); without one, to a
        decision a person requested (``mape actions request``), which counts
        for cooldowns exactly like that request would.
        """
        run = next((r for r in queries.in_flight_actions(self.session, self.model_id) if r.action == spec.action), None)
        if run is None:
            decision = self._undispatched(spec.action) or self._requested(spec.action, at)
            run = ActionRun(decision_id=decision.id, model_id=self.model_id, action=spec.action,
                            params=dict(decision.params), idempotency_key=f"mape-decision-{decision.id}",
                            created_at=at)
        run.state = spec.state
        run.updated_at = at
        if spec.state == ActionState.running.value and run.started_at is None:
            run.started_at = at
        if spec.state not in queries.IN_FLIGHT_STATES:
            run.finished_at = at
        self.session.add(run)

    def _undispatched(self, action: str) -> Decision | None:
        for decision in queries.decisions_to_dispatch(self.session):
            if decision.model_id == self.model_id and decision.action == action:
                return decision
        return None

    def _requested(self, action: str, at: datetime) -> Decision:
        decision = Decision(created_at=at, tick_at=None, model_id=self.model_id, policy_name="manual", action=action,
                            evidence={"requested_by": ACTOR}, status=DecisionStatus.approved.value,
                            reason="requested in a policy test", actor=ACTOR, decided_by=ACTOR, decided_at=at,
                            dedup_key=f"{self.model.name}/manual/{ACTOR}/{at.isoformat()}/{action}")
        stored, _ = queries.add_decision(self.session, decision)
        return stored


def _outcome(decision: Decision) -> DecisionOutcome:
    return DecisionOutcome(id=decision.id, policy=decision.policy_name, action=decision.action,
                           status=decision.status, reason=decision.reason or "")


def _tick_times(case: PolicyTestCase) -> list[datetime]:
    times = [case.start]
    for tick in case.ticks[1:]:
        times.append(times[-1] + (tick.advance or case.interval))
    return times


def _run_case(path: Path, index: int, case: PolicyTestCase, policies: Sequence[LoadedPolicy]) -> PolicyTestResult:
    result = PolicyTestResult(file=str(path), name=case.name)
    planner = Planner(policies, actor=ACTOR, max_age=case.max_age)
    with tempfile.TemporaryDirectory(prefix="mape-policy-test-") as directory:
        url = f"sqlite:///{Path(directory) / 'knowledge.db'}"
        upgrade(url)
        engine = create_engine_for(url)
        try:
            with session_scope(engine) as session:
                world = _World(session, case)
                session.commit()
                for number, (tick, at) in enumerate(zip(case.ticks, _tick_times(case))):
                    where = f"tests[{index}].ticks[{number}]"
                    world.apply(tick, at, where)
                    report = planner.plan(session, [world.model], at)
                    session.commit()
                    result.ticks += 1
                    if tick.expect is None:
                        continue
                    rows = report.decisions.get(world.model.name, [])
                    failure = TickFailure(index=number, at=at, expected=list(tick.expect),
                                          got=[_outcome(d) for d in rows])
                    if list(failure.diff()):
                        failure.errors = [str(e) for e in report.errors]
                        # the context the planner saw: stored with its decisions, else the same read again
                        failure.context = (rows[0].evidence.get("context", {}) if rows
                                           else build_context(session, world.model, at, max_age=case.max_age))
                        result.failures.append(failure)
        except _SetupError as exc:
            result.error = str(PolicyError(str(exc), source=str(path), field=exc.field))
        finally:
            engine.dispose()
    return result


def _run_file(path: Path, known_actions: Collection[str] | None) -> PolicyTestReport:
    report = PolicyTestReport()
    try:
        spec = _read_test_file(path)
        policies = _load_policies(path, spec, known_actions)
        Planner(policies)  # refuses duplicate names, naming both files
    except PolicyError as exc:
        report.errors.append(exc)
        return report
    for index, case in enumerate(spec.tests):
        report.results.append(_run_case(path, index, case, policies))
    return report


def run_policy_tests(path: str | os.PathLike[str], *,
                     known_actions: Collection[str] | None = None) -> PolicyTestReport:
    """Run a policy test file, or every ``*.test.yaml`` / ``*.test.yml`` directly in a directory.

    Parameters
    ----------
    path : path
        A test file or a directory of them (not searched recursively).
    known_actions : collection of str, optional
        Registered action types: a policy naming another fails its test file.
        ``None`` accepts every action type (the plan stage does not know the
        execute stage's registry; ``mape policy test`` passes it).

    Returns
    -------
    PolicyTestReport
        One result per test; a file that cannot be run (bad format, a policy
        that does not load) is one error naming the file and field. A path
        without test files is an error too, so a typo never passes.
    """
    path = Path(path)
    report = PolicyTestReport()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and is_policy_test_file(p))
        if not files:
            report.errors.append(PolicyError("no policy test files (*.test.yaml) here", source=str(path)))
        for file in files:
            report.extend(_run_file(file, known_actions))
        return report
    if not path.exists():
        report.errors.append(PolicyError("no such file or directory", source=str(path)))
        return report
    return report.extend(_run_file(path, known_actions))
