"""The knowledge base's tables: everything the loop knows, as SQLModel rows.

Who uses it: every stage writes its results here and reads its inputs from
here (through :mod:`knowledge.queries` and :mod:`knowledge.registry`), the
dashboard reads the same rows, and Alembic (``knowledge/migrations``) owns the
schema. A change here needs a migration.

Conventions: datetimes are timezone-aware UTC (sqlmodel's UTCDateTime, see
:mod:`mape._util.timeutil`);
free-form structures (labels, params, evidence, metrics) are JSON columns;
enumerations are plain strings checked by the code that writes them, so a new
state does not need a database enum migration.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, Optional

from sqlalchemy import JSON, Column, Index, LargeBinary, UniqueConstraint, text
from sqlalchemy.orm import configure_mappers
from sqlmodel import Field, SQLModel

from mape._util.timeutil import utcnow


def _json(**kwargs: Any) -> Any:
    return Field(default_factory=dict, sa_column=Column(JSON, nullable=False), **kwargs)


class Stage(str, Enum):
    """Lifecycle stage of a model version."""

    candidate = "candidate"
    canary = "canary"  # serves a share of the replicas beside production while its canary steps bake
    production = "production"
    archived = "archived"
    rejected = "rejected"


class DecisionStatus(str, Enum):
    """What the planner decided to do with a firing policy."""

    proposed = "proposed"  # enforce mode, no approval needed: the executor will act
    awaiting_approval = "awaiting_approval"
    approved = "approved"
    rejected = "rejected"
    suppressed = "suppressed"  # paused, cooldown, rate limit, a busy model, or a higher-priority decision won
    dry_run = "dry_run"
    expired = "expired"  # awaited approval past its policy's approval_timeout (expires_at)


class ActionState(str, Enum):
    """States of an action run; :mod:`mape.execute.state` holds the allowed transitions."""

    pending = "pending"
    scheduled = "scheduled"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    timed_out = "timed_out"


class Verdict(str, Enum):
    """Verification of a succeeded action run against its policy's ``verify`` (null: not verified)."""

    pending = "pending"  # within the bake time: evaluated every tick, no verdict yet
    passed = "pass"
    failed = "fail"
    inconclusive = "inconclusive"  # too few successful evaluations: a person decides


#: Verdicts that block the policy from acting on the model again until a new symptom or a person lifts it.
BLOCKING_VERDICTS = (Verdict.failed.value, Verdict.inconclusive.value)


class CanaryState(str, Enum):
    """Where a canary promotion stands (:class:`Canary`)."""

    running = "running"  # a share of the replicas serves the candidate; the current step bakes
    promoted = "promoted"  # every step held: the candidate is in production
    aborted = "aborted"  # a step did not hold (or production changed under it): canary removed, candidate rejected


class PauseScope(str, Enum):
    """What a pause holds back: every decision of one policy, or every decision for one model."""

    policy = "policy"
    model = "model"


class SymptomStatus(str, Enum):
    open = "open"
    closed = "closed"


# --------------------------------------------------------------------------- models and versions


class ManagedModelBase(SQLModel):
    name: str = Field(index=True, unique=True, max_length=200)
    owner: str = ""
    description: str = ""
    labels: dict[str, str] = _json()
    training_entrypoint: str = ""
    serving_target: Optional[str] = None


class ManagedModel(ManagedModelBase, table=True):
    __tablename__ = "managed_model"
    id: Optional[int] = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    def __str__(self) -> str:
        return f"model {self.name}"


class ModelVersionBase(SQLModel):
    model_id: int = Field(foreign_key="managed_model.id", index=True)
    version: int
    stage: str = Field(default=Stage.candidate.value, max_length=20)
    artifact_uri: str = ""
    training_window_start: Optional[datetime] = None
    training_window_end: Optional[datetime] = None
    metrics: dict[str, Any] = _json()
    evaluation: dict[str, Any] = _json(description="Champion/challenger numbers of the promotion gate.")
    parent_version_id: Optional[int] = Field(default=None, foreign_key="model_version.id")
    created_by_action_run_id: Optional[int] = Field(default=None, foreign_key="action_run.id")


class ModelVersion(ModelVersionBase, table=True):
    __tablename__ = "model_version"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_model_version"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)
    promoted_at: Optional[datetime] = None
    retired_at: Optional[datetime] = None

    def __str__(self) -> str:
        return f"version {self.version} ({self.stage})"


# --------------------------------------------------------------------------- the loop's rows


class KnowledgeBase(SQLModel, table=True):
    """This knowledge base's identity: one row, written by migration 0008.

    Names it where keys from several knowledge bases meet: two knowledge bases
    each have a decision 1, so the idempotency key a Prefect server sees is the
    run's key qualified by this ``instance``.
    """

    __tablename__ = "knowledge_base"
    id: Optional[int] = Field(default=None, primary_key=True)
    instance: str = Field(max_length=36, unique=True, description="A random UUID.")
    created_at: datetime = Field(default_factory=utcnow)


class Tick(SQLModel, table=True):
    """One iteration of one controller's loop, keyed by its logical time so a repeated tick is recognised."""

    __tablename__ = "tick"
    # one row per controller and logical time: controllers sharing a fleet (model leases) tick at the same times
    __table_args__ = (UniqueConstraint("controller_id", "at", name="uq_tick_controller_at"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    at: datetime = Field(index=True)
    controller_id: str = ""
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: Optional[datetime] = None
    status: str = Field(default="running", max_length=20)
    flow_run_id: Optional[str] = None
    summary: dict[str, Any] = _json()


class Observation(SQLModel, table=True):
    """One measured value: a metric of a model at a time, from a sensor."""

    __tablename__ = "observation"
    __table_args__ = (Index("ix_observation_model_metric_time", "model_id", "metric", "time"),
                      # the raw rows by time, for the retention pass (knowledge.retention); downsampled rows leave it
                      Index("ix_observation_raw_time", "time", sqlite_where=text("samples IS NULL"),
                            postgresql_where=text("samples IS NULL")))
    id: Optional[int] = Field(default=None, primary_key=True)
    time: datetime
    model_id: int = Field(foreign_key="managed_model.id")
    sensor: str = Field(max_length=50)
    metric: str = Field(max_length=200)
    value: Optional[float] = None
    labels: dict[str, Any] = _json(description="Dimensions of the value, e.g. feature and test.")
    samples: Optional[int] = Field(
        default=None, description="null: a raw measurement. Set by the retention pass (knowledge.retention): the row "
                                  "stands for the bucket [time, time + bucket) and value is the mean of this many "
                                  "values (0: every raw value was null).")
    value_min: Optional[float] = Field(default=None, description="Downsampled rows: the smallest value of the bucket.")
    value_max: Optional[float] = Field(default=None, description="Downsampled rows: the largest value of the bucket.")


def new_observation(*, time: datetime, model_id: int, sensor: str, metric: str, value: float | None,
                    labels: dict[str, Any] | None = None) -> Observation:
    """An :class:`Observation` built without pydantic validation, for sensors that write thousands a tick.

    Built the way the ORM builds rows it loads (the values are the caller's,
    already of the right types); measured: 0.17 ms per observation through
    the validating constructor against a few microseconds here.

    >>> from datetime import timezone
    >>> row = new_observation(time=datetime(2026, 1, 5, tzinfo=timezone.utc), model_id=1, sensor="drift",
    ...                       metric="drift.share_drifted", value=0.25)
    >>> row.metric, row.value, row.labels, row.id
    ('drift.share_drifted', 0.25, {}, None)
    """
    if not Observation.__mapper__.configured:  # type: ignore[attr-defined]  # (configure_mappers is not free)
        configure_mappers()  # before the first session, the class is not instrumented yet
    row = Observation._sa_class_manager.new_instance()  # type: ignore[attr-defined]
    row.__dict__.update(id=None, time=time, model_id=model_id, sensor=sensor, metric=metric, value=value,
                        labels=labels if labels is not None else {})
    return row


def observation_row(*, time: datetime, model_id: int, sensor: str, metric: str, value: float | None,
                    labels: dict[str, Any] | None = None) -> dict[str, Any]:
    """The column values of an observation, as :func:`knowledge.queries.add_observations` stores them.

    What :func:`new_observation` holds, without the ORM object: the monitor
    writes tens of thousands a tick, and an object per row costs more to
    build (and to collect) than to store.

    >>> from datetime import timezone
    >>> observation_row(time=datetime(2026, 1, 5, tzinfo=timezone.utc), model_id=1, sensor="drift",
    ...                 metric="drift.share_drifted", value=0.25)["labels"]
    {}
    """
    return {"time": time, "model_id": model_id, "sensor": sensor, "metric": metric, "value": value,
            "labels": labels if labels is not None else {}}


class SymptomBase(SQLModel):
    model_id: int = Field(foreign_key="managed_model.id", index=True)
    kind: str = Field(max_length=100)
    severity: str = Field(default="warning", max_length=20)
    status: str = Field(default=SymptomStatus.open.value, max_length=20)
    opened_at: datetime
    closed_at: Optional[datetime] = None
    last_seen_at: datetime
    evidence: dict[str, Any] = _json()


class Symptom(SymptomBase, table=True):
    __tablename__ = "symptom"
    __table_args__ = (Index("ix_symptom_model_kind_status", "model_id", "kind", "status"),)
    id: Optional[int] = Field(default=None, primary_key=True)

    def __str__(self) -> str:
        return f"symptom {self.kind} ({self.status})"


class DecisionBase(SQLModel):
    created_at: datetime = Field(default_factory=utcnow)
    tick_at: Optional[datetime] = Field(default=None, index=True)
    # no index of its own: ix_decision_model_action_time (model_id, action, created_at) serves lookups by model
    model_id: int = Field(foreign_key="managed_model.id")
    policy_name: str = Field(max_length=200)
    policy_sha256: Optional[str] = Field(default=None, max_length=64)
    action: str = Field(max_length=50)
    params: dict[str, Any] = _json()
    evidence: dict[str, Any] = _json()
    status: str = Field(max_length=30)
    reason: str = ""
    actor: str = ""
    priority: int = 0
    expires_at: Optional[datetime] = Field(
        default=None, description="Deadline of an awaiting_approval decision (its policy's approval_timeout).")
    follows_run_id: Optional[int] = Field(
        default=None, description="The action run whose verification verdict made this decision (a follow-up).")
    not_before: Optional[datetime] = Field(
        default=None, description="A deferred decision's action may not start before this (its policy's defer.earliest).")
    deadline: Optional[datetime] = Field(
        default=None, description="A deferred decision's action should have started by this (defer.deadline).")


class Decision(DecisionBase, table=True):
    """A policy fired for a model: what the planner decided, why, and on what evidence."""

    __tablename__ = "decision"
    __table_args__ = (Index("ix_decision_model_action_time", "model_id", "action", "created_at"),
                      Index("ix_decision_status_expires_at", "status", "expires_at"))
    id: Optional[int] = Field(default=None, primary_key=True)
    dedup_key: str = Field(unique=True, max_length=300,
                           description="tick/model/policy: a repeated tick adds nothing (tick first: new keys append).")
    decided_by: Optional[str] = None
    decided_at: Optional[datetime] = None
    comment: str = ""

    def __str__(self) -> str:
        return f"decision {self.id} ({self.policy_name} -> {self.action}, {self.status})"


class DecisionRead(DecisionBase):
    id: int
    dedup_key: str


class ActionRunBase(SQLModel):
    decision_id: int = Field(foreign_key="decision.id", unique=True)
    model_id: int = Field(foreign_key="managed_model.id", index=True)
    action: str = Field(max_length=50)
    params: dict[str, Any] = _json()
    idempotency_key: str = Field(unique=True, max_length=300)
    state: str = Field(default=ActionState.pending.value, max_length=20, index=True)
    attempts: int = 0
    scheduled_for: Optional[datetime] = None
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    flow_run_id: Optional[str] = None
    claimed_by: Optional[str] = Field(
        default=None, max_length=300,
        description="The process that claimed the current or last attempt (host/boot/pid/start time): "
                    "reconciliation tells a dead claimer's run from a live one by it.")
    energy_kwh: Optional[float] = None
    emissions_kg: Optional[float] = None
    result: dict[str, Any] = _json()
    message: str = ""
    # verification (policy ``verify``): see mape.plan.verification
    verdict: Optional[str] = Field(default=None, max_length=20, index=True,
                                   description="null (not verified), pending, pass, fail or inconclusive (Verdict).")
    verify_until: Optional[datetime] = Field(default=None, description="End of the bake time: finished_at + within.")
    verify_true: int = Field(default=0, description="Evaluations of the expectation that were true.")
    verify_false: int = Field(default=0, description="Evaluations of the expectation that were false.")
    verify_errors: int = Field(default=0, description="Ticks the expectation could not be evaluated (never a failure).")
    verify_last: Optional[bool] = Field(default=None, description="The last successful evaluation's value.")
    last_verified_at: Optional[datetime] = Field(
        default=None, description="Logical time of the last evaluation: a tick at or before it counts nothing.")
    verdict_at: Optional[datetime] = None
    verification: dict[str, Any] = _json(description="The verify spec judged by, the last evaluation, the outcome.")
    block_lifted_at: Optional[datetime] = Field(
        default=None, description="When a person let the policy act again after a fail or inconclusive verdict.")
    block_lifted_by: Optional[str] = Field(default=None, max_length=200)


class ActionRun(ActionRunBase, table=True):
    """The progress record of one action: retries and resumption are decided from this row."""

    __tablename__ = "action_run"
    id: Optional[int] = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    def __str__(self) -> str:
        return f"action run {self.id} ({self.action}, {self.state})"


class Canary(SQLModel, table=True):
    """A candidate promoted to a share of the serving replicas first, widened step by step while verification holds.

    The progress record of one canary, kept here rather than in memory so that
    a restarted controller resumes it: the Plan stage's verification judges
    the current step (:mod:`mape.plan.canary`) and writes ``step_verdict``;
    the Execute stage (:mod:`mape.execute.canary`) acts on it (widens to the
    next step, promotes after the last one, or aborts) and starts the next
    step. One canary per action run (the ``retrain`` run that trained the
    candidate).
    """

    __tablename__ = "canary"
    id: Optional[int] = Field(default=None, primary_key=True)
    action_run_id: int = Field(foreign_key="action_run.id", unique=True)
    model_id: int = Field(foreign_key="managed_model.id", index=True)
    version_id: int = Field(foreign_key="model_version.id", description="The candidate.")
    champion_version_id: Optional[int] = Field(
        default=None, foreign_key="model_version.id",
        description="The production version when the canary started; production changing under it aborts it.")
    target: str = Field(max_length=20, description="The serving target's kind: local or kubernetes.")
    state: str = Field(default=CanaryState.running.value, max_length=20, index=True)
    steps: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False),
                                        description="The shares and bake times: [{share, bake}], as configured.")
    step: int = Field(0, description="Index of the current step in steps.")
    share: float = Field(0.0, description="The share of replicas the current step asked for.")
    replicas: int = Field(0, description="Replicas serving the candidate in the current step.")
    stable_replicas: int = Field(0, description="Replicas serving production when the current step started.")
    step_started_at: datetime
    step_until: datetime = Field(description="End of the current step's bake time.")
    step_verdict: Optional[str] = Field(
        default=None, max_length=20,
        description="The current step's verdict (pass, fail, inconclusive) until the Execute stage acts on it.")
    verify_true: int = 0
    verify_false: int = 0
    verify_errors: int = 0
    verify_last: Optional[bool] = None
    last_verified_at: Optional[datetime] = Field(
        default=None, description="Logical time of the last evaluation: a tick at or before it counts nothing.")
    attempts: int = Field(0, description="Failed tries to apply the current step's verdict to the serving target.")
    message: str = ""
    history: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False),
                                          description="Every step so far: share, replicas, times, verdict, counts.")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    finished_at: Optional[datetime] = None

    @property
    def last_step(self) -> bool:
        """Whether the current step is the last one (its pass promotes the candidate)."""
        return self.step >= len(self.steps) - 1

    def __str__(self) -> str:
        return f"canary {self.id} (step {self.step + 1} of {len(self.steps)}, {self.share:.0%}, {self.state})"


class ReferenceWindow(SQLModel, table=True):
    """One version of a model's drift reference: the rows its drift and quality sensors compare windows with.

    Versions are numbered per model (1, 2, ...) and belong to the model
    version that was in production when they were taken. ``fixed`` and
    ``rolling`` references are windows of the inference log (their bounds are
    stored, with the rows' fingerprint to tell whether the log changed);
    a ``reservoir`` reference is a sample that no window reproduces, so its
    rows are stored too (``sample``: Parquet bytes), for the newest ``keep``
    versions of a model version.
    """

    __tablename__ = "reference_window"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_reference_window_version"),
                      Index("ix_reference_window_model_version_version", "model_version_id", "version"))
    id: Optional[int] = Field(default=None, primary_key=True)
    model_id: int = Field(foreign_key="managed_model.id")
    model_version_id: int = Field(foreign_key="model_version.id")
    version: int
    kind: str = Field(max_length=20)
    window_start: Optional[datetime] = None
    window_end: Optional[datetime] = None
    n_rows: int = 0
    n_seen: int = Field(0, description="reservoir: rows of the version seen by the monitor when the sample was taken.")
    fingerprint: str = Field("", max_length=64, description="sha256 of the rows' content.")
    reason: str = Field("", max_length=300)
    sample: Optional[bytes] = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    taken_at: datetime = Field(description="The tick (logical time) that took it.")
    created_at: datetime = Field(default_factory=utcnow)

    def __str__(self) -> str:
        return f"reference {self.version} ({self.kind}, {self.n_rows} rows)"


class PolicyVersion(SQLModel, table=True):
    """Every version of every policy ever loaded; decisions name the sha256 that made them."""

    __tablename__ = "policy_version"
    __table_args__ = (UniqueConstraint("name", "sha256", name="uq_policy_version"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, index=True)
    sha256: str = Field(max_length=64)
    text: str
    source: str = ""
    author: str = ""
    loaded_at: datetime = Field(default_factory=utcnow)


class PolicyState(SQLModel, table=True):
    """Where a policy with ``for`` or ``keep_firing_for`` stands for one model (pending, firing, or neither).

    The planner's progress record for those two durations, kept here rather than
    in memory so that a restarted controller resumes where the last one stopped.
    ``pending_since``: start of the current active period (every evaluation since
    held, or the policy is kept firing); ``last_true_at``: the last evaluation on
    which the condition held; ``firing_since``: when the policy started firing,
    null while it is only pending; ``updated_at``: the logical time of the last
    evaluation (an evaluation at or before it changes nothing).
    """

    __tablename__ = "policy_state"
    __table_args__ = (UniqueConstraint("model_id", "policy_name", name="uq_policy_state"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    model_id: int = Field(foreign_key="managed_model.id")
    policy_name: str = Field(max_length=200)
    pending_since: Optional[datetime] = None
    last_true_at: Optional[datetime] = None
    firing_since: Optional[datetime] = None
    updated_at: datetime

    @property
    def firing(self) -> bool:
        return self.firing_since is not None

    def __str__(self) -> str:
        what = "firing" if self.firing else ("pending" if self.pending_since is not None else "inactive")
        return f"policy {self.policy_name} on model id {self.model_id} ({what})"


class Pause(SQLModel, table=True):
    """A person has paused a policy (everywhere) or a model (for every policy): its decisions are suppressed."""

    __tablename__ = "pause"
    __table_args__ = (UniqueConstraint("scope", "name", name="uq_pause_scope_name"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    scope: str = Field(max_length=20, description="policy or model (PauseScope).")
    name: str = Field(max_length=200)
    paused_by: str = Field(max_length=200)
    reason: str = ""
    paused_at: datetime = Field(default_factory=utcnow)

    def __str__(self) -> str:
        return f"{self.scope} {self.name} paused by {self.paused_by} at {self.paused_at.isoformat()}: {self.reason}"


class PolicyMode(str, Enum):
    """A policy's mode: ``spec.mode`` of its file, or a person's override of it (:class:`PolicyModeOverride`)."""

    enforce = "enforce"
    dry_run = "dry-run"
    off = "off"


class PolicyModeOverride(SQLModel, table=True):
    """A person has set a policy's mode in the knowledge base, over the ``spec.mode`` of its file.

    One row per policy while the override is in force; clearing it deletes
    the row and the file's mode applies again. The history is the audit
    trail's ``policy.mode_changed`` events (each keeps the mode before).
    """

    __tablename__ = "policy_mode_override"
    id: Optional[int] = Field(default=None, primary_key=True)
    policy_name: str = Field(max_length=200, unique=True)
    mode: str = Field(max_length=20, description="enforce, dry-run or off (PolicyMode).")
    set_by: str = Field(max_length=200)
    reason: str = ""
    set_at: datetime = Field(default_factory=utcnow)

    def __str__(self) -> str:
        return f"policy {self.policy_name} set to {self.mode} by {self.set_by} at {self.set_at.isoformat()}: {self.reason}"


class AuditEvent(SQLModel, table=True):
    """Append-only trail; each row's hash covers its content and the previous row's hash."""

    __tablename__ = "audit_event"
    id: Optional[int] = Field(default=None, primary_key=True)
    time: datetime = Field(default_factory=utcnow, index=True)
    actor: str = Field(max_length=200)
    kind: str = Field(max_length=100)
    subject: str = Field(default="", max_length=300)
    payload: dict[str, Any] = _json()
    prev_hash: str = Field(max_length=64, unique=True)
    hash: str = Field(max_length=64, unique=True)


class NotificationState(str, Enum):
    """Where a queued notification stands: waiting (also between attempts), delivered, or given up."""

    pending = "pending"
    sent = "sent"
    failed = "failed"


class Notification(SQLModel, table=True):
    """The outbox: one message for one channel, and the progress of delivering it.

    The controller queues rows and sends the due ones each tick; a failed attempt
    sets ``next_attempt_at``, so retries survive a restart. ``delivered`` holds
    fingerprints (never the URLs: they may carry secrets) of the channel's URLs
    that already accepted the message, so a retry does not send it to them twice.
    """

    __tablename__ = "notification"
    __table_args__ = (Index("ix_notification_state_next_attempt_at", "state", "next_attempt_at"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)
    event: str = Field(max_length=50)
    channel: str = Field(max_length=50)
    model_id: Optional[int] = Field(default=None, foreign_key="managed_model.id")
    decision_id: Optional[int] = Field(default=None, foreign_key="decision.id", index=True)
    action_run_id: Optional[int] = Field(default=None, foreign_key="action_run.id")
    title: str = Field(max_length=300)
    body: str
    payload: dict[str, Any] = _json(description="The message as structured data (evidence, link).")
    state: str = Field(default=NotificationState.pending.value, max_length=20)
    attempts: int = 0
    next_attempt_at: datetime
    sent_at: Optional[datetime] = None
    last_error: str = ""
    delivered: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    dedup_key: str = Field(unique=True, max_length=300, description="event/subject/channel: queued once.")

    def __str__(self) -> str:
        return f"notification {self.id} ({self.event} to {self.channel}, {self.state})"


class ShadowStatus(str, Enum):
    """Where a shadow search of live deferral stands (:class:`DeferralShadow`)."""

    pending = "pending"  # a window has not passed yet, or its actuals are not known yet
    scored = "scored"  # the realised gain is known
    unscorable = "unscorable"  # the actuals never covered its windows: it counts for nothing


class DeferralShadow(SQLModel, table=True):
    """One shadow search of live deferral: what a forecast promised, and what the actual series gave.

    The planner makes the search a deferred action would get once an hour for
    every kind of search its policies use (``key``: objective, duration,
    window), whether an action arrives or not; once both windows have passed
    (``due_at``) it scores it on the actual series (``carbon``: the
    ``carbon.intensity`` observations; ``price``: the published prices). The
    scored shadows of the last 28 days are the evidence of the forecaster's
    recent error (:mod:`mape.plan.forecast_guard`). Rows older than the
    retention are pruned by the planner.
    """

    __tablename__ = "deferral_shadow"
    __table_args__ = (UniqueConstraint("key", "issued_at", name="uq_deferral_shadow_key_issued_at"),
                      Index("ix_deferral_shadow_status_due_at", "status", "due_at"))
    id: Optional[int] = Field(default=None, primary_key=True)
    key: str = Field(max_length=200, description="The kind of search, e.g. 'carbon 1h +0s..12h'.")
    issued_at: datetime = Field(description="The tick whose forecast was searched.")
    objective: dict[str, Any] = _json(description="Weights per series, e.g. {carbon: 1.0}.")
    earliest: datetime = Field(description="Start of the run-now window.")
    latest_start: datetime
    duration_s: float = Field(description="The job's duration in seconds.")
    chosen_start: datetime = Field(description="The best start on the forecast.")
    due_at: datetime = Field(description="When both windows have passed: it can be scored from then on.")
    predicted_gain: float = Field(description="Forecast objective at earliest minus the chosen window's.")
    predicted: dict[str, Any] = _json(description="Per series: forecast means run_now and chosen, and scale.")
    status: str = Field(default=ShadowStatus.pending.value, max_length=20)
    realised_gain: Optional[float] = Field(default=None, description="The same difference on the actual series.")
    actual: dict[str, Any] = _json(description="Per series: actual means run_now and chosen.")
    note: str = Field(default="", max_length=300, description="Why it could not be scored.")
    scored_at: Optional[datetime] = None

    def __str__(self) -> str:
        return f"shadow search {self.id} ({self.key} at {self.issued_at.isoformat()}, {self.status})"


class ControllerMember(SQLModel, table=True):
    """A controller process that shares the fleet, while its membership lasts (renewed with its model leases).

    The live members decide each one's fair share of the models
    (:mod:`knowledge.leases`); a member that stops renewing drops out when
    ``expires_at`` passes, and a clean shutdown deletes its row at once.
    """

    __tablename__ = "controller_member"
    controller_id: str = Field(primary_key=True, max_length=200)
    process: str = Field(default="", max_length=300, description="host/boot/pid/start of the renewing process.")
    joined_at: datetime
    renewed_at: datetime
    expires_at: datetime = Field(index=True)


class ModelLease(SQLModel, table=True):
    """Which controller acts for a model, until when: the lease behind scale-out (:mod:`knowledge.leases`).

    A lease is held while ``expires_at`` is in the future; its holder renews
    it, another controller may take it once it has expired. ``epoch`` counts
    the changes of holder: it fences work started under an older lease. An
    empty ``holder`` is a lease nobody holds.
    """

    __tablename__ = "model_lease"
    model_id: int = Field(primary_key=True, foreign_key="managed_model.id")
    holder: str = Field(default="", max_length=200, index=True)
    epoch: int = 0
    acquired_at: Optional[datetime] = None
    renewed_at: Optional[datetime] = None
    expires_at: datetime

    def __str__(self) -> str:
        return f"lease of model_id={self.model_id} (holder {self.holder or 'none'}, epoch {self.epoch})"


class RetentionState(SQLModel, table=True):
    """When the retention pass last ran (:mod:`knowledge.retention`): one row, written by migration 0012.

    Processes and ticks claim a pass by moving ``started_at`` with one
    conditional UPDATE, so a pass runs at most once per period however many
    controllers share the knowledge base.
    """

    __tablename__ = "retention_state"
    id: Optional[int] = Field(default=None, primary_key=True)
    started_at: Optional[datetime] = Field(default=None, description="Logical time of the last pass claimed.")
    finished_at: Optional[datetime] = Field(default=None, description="Wall-clock end of that pass; null while it runs.")
    complete: Optional[bool] = Field(default=None, description="False: its time budget stopped it (the next tick "
                                                               "goes on).")
    claimed_by: str = Field(default="", max_length=300)
    report: dict[str, Any] = _json(description="What the last pass did (RetentionReport).")
