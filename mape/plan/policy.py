"""The policy file format (``apiVersion: mape/v1``, ``kind: Policy``): the single source of truth.

What it does: pydantic models of one policy document, Kubernetes style
(``apiVersion``, ``kind``, ``metadata``, ``spec``). Every model forbids unknown
fields, so a typo (``cooldwn: 6h``) is an error naming the field, never a
silently ignored setting. :func:`policy_json_schema` derives the JSON Schema
that ``policies/policy.schema.json`` ships for editors
(:func:`policy_schema_text` is that file's exact text; a test keeps them equal).

Who calls it: :mod:`mape.plan.loader` validates parsed YAML into
:class:`Policy`; the planner reads the validated fields. CEL conditions are
kept as strings here and compiled by the loader
(:mod:`mape.plan.expressions`), so this module stays free of CEL.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from mape._util.timeutil import format_duration, parse_duration
from mape.config import CHANNEL_NAME_PATTERN, QualityDimension

API_VERSION = "mape/v1"
KIND = "Policy"

#: Policy names: lowercase letters, digits and '-', starting and ending alphanumeric, at most 63 (a DNS label).
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
#: Action types: what the action registry of the execute stage is keyed by.
ACTION_TYPE_PATTERN = r"^[a-z][a-z0-9_-]{0,49}$"
#: Priorities are stored in a 32-bit column; this range is far more than any policy library needs.
PRIORITY_LIMIT = 1_000_000
#: The longest duration a policy may give (100 years): the planner adds durations to and subtracts them from
#: tick times, and a longer one would leave the calendar (``datetime`` ends in the year 9999).
DURATION_LIMIT = timedelta(days=36_500)


def _duration(value: Any) -> timedelta:
    duration = parse_duration(value)
    if duration > DURATION_LIMIT:
        raise ValueError(f"must be at most {format_duration(DURATION_LIMIT)} (100 years)")
    return duration


Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d|w)\s*$"},
                {"type": "number", "minimum": 0},
            ],
            "description": "A duration: a number and a unit (90s, 15m, 6h, 14d, 2w), or seconds.",
        }
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Metadata(_Strict):
    """Who the policy is and who owns it.

    Parameters
    ----------
    name : str
        Unique name across the policy library (a DNS label: lowercase letters,
        digits and ``-``). Decisions record it.
    owner : str
        Person or team to ask about the policy, e.g. an e-mail address.
    description : str
        One or two sentences on what the policy is for.
    labels : dict of str to str
        Free labels of the policy itself (not a selector).
    """

    name: str = Field(pattern=NAME_PATTERN, max_length=63, description="Unique policy name (a DNS label).")
    owner: str = Field("", description="Person or team responsible for the policy.")
    description: str = Field("", description="What the policy is for.")
    labels: dict[str, str] = Field(default_factory=dict, description="Free labels of the policy itself.")


class Selector(_Strict):
    """Which managed models a policy applies to: all conditions must hold.

    Parameters
    ----------
    models : list of str
        Shell-style globs (``fnmatch``, case-sensitive) on the model name; the
        model must match at least one. Default ``["*"]``: every model.
    labels : dict of str to str
        Every label must be present on the model with exactly this value.
    """

    models: list[str] = Field(default_factory=lambda: ["*"], description="Globs on the model name; one must match.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels the model must carry, all of them.")


class ActionSpec(_Strict):
    """What to do when the policy fires.

    Parameters
    ----------
    type : str
        An action type registered with the execute stage (``retrain``,
        ``rollback``, ...); the loader refuses unknown types.
    params : dict
        Passed to the action, which validates them.
    """

    type: str = Field(pattern=ACTION_TYPE_PATTERN, description="Registered action type, e.g. retrain or rollback.")
    params: dict[str, Any] = Field(default_factory=dict, description="Parameters of the action.")

    @field_validator("params")
    @classmethod
    def _json_values(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Params are stored in JSON columns; YAML would hand over dates and timestamps as Python objects.
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"must hold only strings, numbers, booleans, lists and maps (quote dates): {exc}") from None
        return value


class RateLimit(_Strict):
    """At most ``max`` acting decisions of the policy for one model within any ``per``.

    Parameters
    ----------
    max : int
        How many acting decisions (proposed, awaiting approval, approved) are
        allowed in the window; at least 1.
    per : timedelta
        Length of the sliding window, ending at the tick; more than 0.
    """

    max: int = Field(ge=1, le=PRIORITY_LIMIT, description="Acting decisions allowed within per.")
    per: Duration = Field(description="Length of the sliding window.")

    @field_validator("per")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than 0")
        return value


class Exclusion(_Strict):
    """A hard exclusion: never act within ``within`` of an acting decision of ``action`` on the same model.

    Parameters
    ----------
    action : str
        The other action type, e.g. ``rollback``.
    within : timedelta
        How long after that decision the exclusion holds (default ``0``: only
        in the same tick).
    """

    action: str = Field(pattern=ACTION_TYPE_PATTERN, description="The action type this policy never acts with.")
    within: Duration = Field(timedelta(0), json_schema_extra={"default": "0s"},
                             description="How long after that action's decision the exclusion holds.")


class Verify(_Strict):
    """What must hold once the policy's action has had time to work, and what to do when it does not.

    Parameters
    ----------
    expect : str
        CEL condition over the same per-model context as ``when``; it should
        be ``true`` once the action has had its effect. Evaluated on every
        tick after the action run succeeded; a tick on which it cannot be
        evaluated (a missing or stale signal, a type error) counts as an
        error, never as a failure.
    within : timedelta
        The bake time, more than 0: the verdict is taken at the first tick at
        or after the run's end plus ``within``.
    min_evaluations : int
        Fewer successful evaluations than this within the bake time make the
        verdict ``inconclusive`` (default 1).
    otherwise : {"rollback", "escalate"}
        On ``fail``: ``rollback`` proposes a rollback (it acts at once);
        ``escalate`` asks a person (a rollback decision awaiting approval).
        An ``inconclusive`` verdict always asks a person.
    """

    expect: str = Field(min_length=1, description="CEL condition that must hold once the action has had its effect.")
    within: Duration = Field(description="The bake time: the verdict is taken this long after the action finished.")
    min_evaluations: int = Field(1, ge=1, le=PRIORITY_LIMIT,
                                 description="Fewer successful evaluations make the verdict inconclusive.")
    otherwise: Literal["rollback", "escalate"] = Field(
        "rollback", description="On fail: rollback at once, or escalate to a person.")

    @field_validator("within")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than 0")
        return value


class Defer(_Strict):
    """Run the action later: no earlier than ``earliest`` after the decision, and by ``deadline``.

    Parameters
    ----------
    earliest : timedelta
        The action may not start before the decision's time plus this.
    deadline : timedelta
        It must have started by the decision's time plus this; at least
        ``earliest``. A waiting action starts then, whatever the forecast says.
    cancel_when_cleared : bool
        Cancel the waiting action when the policy stops firing for the model
        before it starts (default true).
    duration : timedelta
        How long the action is expected to run (default ``1h``): where a
        forecast is configured, the start inside ``[earliest, deadline]`` is
        the one whose window of this length has the lowest forecast; without
        one, the start is ``earliest``.
    objective : {"carbon", "price"} or dict of str to float
        What the window minimises: carbon intensity (default), electricity
        price, or a weighted mix such as ``{carbon: 0.7, price: 0.3}`` (each
        series relative to its own mean over the window searched).
    min_saving : float
        Start at ``earliest`` unless the forecast promises at least this
        fraction less than starting then (default 0: any saving).
    replan_saving : float
        While the action waits, the start is searched again on every tick's
        forecast; it moves when the fresh forecast promises at least this
        fraction less than the planned start (default 0.05).
    guard : {"recent_error", "strict", "none"}
        ``recent_error`` (default): defer (or move a waiting action) only when
        the predicted gain exceeds the forecaster's recent error, measured on
        the hourly shadow searches of the last 28 days once at least 10 are
        scored; until then, the forecast alone decides (and the reason says
        so). ``strict``: the same, but without that evidence the action starts
        at ``earliest``. ``none``: the forecast alone, always.
        ``min_saving`` applies in every case.
    """

    earliest: Duration = Field(timedelta(0), json_schema_extra={"default": "0s"},
                               description="The action may not start before the decision plus this.")
    deadline: Duration = Field(description="The action must have started by the decision plus this.")
    cancel_when_cleared: bool = Field(True, description="Cancel the waiting action if the policy stops firing first.")
    duration: Duration = Field(timedelta(hours=1), json_schema_extra={"default": "1h"},
                               description="How long the action is expected to run: the window searched for.")
    objective: Literal["carbon", "price"] | dict[Literal["carbon", "price"], float] = Field(
        "carbon", description="What the start minimises: carbon, price, or weights such as {carbon: 0.7, price: 0.3}.")
    min_saving: float = Field(0.0, ge=0, lt=1, description="Start at earliest unless the forecast saves this fraction.")
    replan_saving: float = Field(0.05, ge=0, le=1,
                                 description="Move a waiting action when a fresh forecast saves this fraction more.")
    guard: Literal["recent_error", "strict", "none"] = Field(
        "recent_error", description="Defer only when the predicted gain exceeds the forecaster's recent error: "
                                    "recent_error (the forecast alone until that is known), strict (no deferral "
                                    "until it is known) or none.")

    @field_validator("duration")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than 0")
        return value

    @field_validator("objective")
    @classmethod
    def _weights(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name, weight in value.items():
                if weight != weight or weight in (float("inf"), float("-inf")) or weight < 0:
                    raise ValueError(f"the weight of {name} must be a finite number >= 0, got {weight}")
            if not any(value.values()):
                raise ValueError("the weights must not all be 0")
        return value

    @property
    def weights(self) -> dict[str, float]:
        """The objective as weights per series: ``carbon`` is ``{"carbon": 1.0}``."""
        return {self.objective: 1.0} if isinstance(self.objective, str) else dict(self.objective)

    @model_validator(mode="after")
    def _ordered(self) -> "Defer":
        if self.deadline < self.earliest:
            raise ValueError(f"deadline ({format_duration(self.deadline)}) must not be before earliest "
                             f"({format_duration(self.earliest)})")
        return self


Effects = dict[QualityDimension, float]


class Alternative(_Strict):
    """Another action a policy may take instead of ``spec.action``, with its expected effects.

    Parameters
    ----------
    action : ActionSpec
        The candidate action.
    effects : dict of str to float
        Expected improvement per quality dimension (``accuracy``, ``fairness``,
        ``latency``, ``cost``, ``gco2``; positive is better, on the scale the
        utility weights assume), e.g. ``{latency: 0.3, cost: -0.2}``.
    when : str, optional
        CEL guard: the alternative is a candidate only when it is true.
    """

    action: ActionSpec
    effects: Effects = Field(default_factory=dict, description="Expected improvement per quality dimension.")
    when: str | None = Field(None, min_length=1, description="CEL guard: a candidate only when true.")

    @field_validator("effects")
    @classmethod
    def _finite(cls, value: dict[str, float]) -> dict[str, float]:
        for key, effect in value.items():
            if effect != effect or effect in (float("inf"), float("-inf")):
                raise ValueError(f"effect on {key} must be a finite number, got {effect}")
        return value


class PolicySpec(_Strict):
    """When a policy fires and how its decision is treated.

    Parameters
    ----------
    selector : Selector
        Which models the policy applies to (default: all).
    priority : int
        Higher first when several policies fire for one model in one tick;
        ties go to the safer action type, then to the policy name.
    when : str
        CEL condition over the evaluation context; the policy fires when it is
        ``true``.
    unless : str, optional
        CEL guard: the policy does not fire when it is ``true`` (or cannot be
        evaluated).
    action : ActionSpec
        What to do.
    cooldown : timedelta
        No new acting decision of the same action type for the same model
        within this time after the last one (default ``1h``; ``0`` disables).
    mode : {"enforce", "dry-run", "off"}
        ``dry-run`` records what would be done without acting; ``off``
        disables the policy.
    approval : {"none", "required"}
        ``required``: the decision waits for a person in the dashboard.
    for_ : timedelta
        Written ``for``. The policy fires only once its condition has held on
        every evaluation for at least this long (pending, then firing), like a
        Prometheus alerting rule (default ``0``: fire at once).
    keep_firing_for : timedelta
        Once firing, keep firing for this long after the last evaluation on
        which the condition held (default ``0``: stop at once).
    rate_limit : RateLimit, optional
        At most ``max`` acting decisions of this policy per model within ``per``.
    approval_timeout : timedelta
        An ``awaiting_approval`` decision not decided within this time expires
        (default ``24h``; ``0``: never).
    never_with : list of Exclusion
        Hard exclusions: the policy does not act on a model within each
        exclusion's ``within`` after an acting decision of its ``action``
        (e.g. never retrain within 24h of a rollback).
    defer : Defer, optional
        Run the action later: between ``earliest`` and ``deadline`` after the
        decision, cancelled if the policy stops firing before it starts.
    verify : Verify, optional
        After the action succeeded: what must hold within the bake time, and
        what to do when it does not (:class:`Verify`).
    notify : list of str
        Notification channels (named in the ``notifications`` settings) that
        receive every event about this policy's decisions: each decision,
        approvals waiting or lapsed, failed actions and verifications. The
        channels' own event subscriptions still apply too.
    effects : dict of str to float
        With ``alternatives``: the expected improvement of ``action`` per
        quality dimension.
    alternatives : list of Alternative
        Other candidate actions with their expected effects. When the policy
        fires, the candidate (``action`` or an alternative whose ``when``
        holds) with the highest utility is taken; ties go to the earlier one.
    utility : dict of str to float, optional
        Weights per quality dimension for this policy; default ``plan.utility``.
    """

    selector: Selector = Field(default_factory=Selector, description="Which managed models the policy applies to.")
    priority: int = Field(0, ge=-PRIORITY_LIMIT, le=PRIORITY_LIMIT, description="Higher wins within a tick.")
    when: str = Field(min_length=1, description="CEL condition; the policy fires when it is true.")
    unless: str | None = Field(None, min_length=1, description="CEL guard; the policy is held back when it is true.")
    action: ActionSpec
    cooldown: Duration = Field(timedelta(hours=1), description="Quiet time after an acting decision of this action.",
                               json_schema_extra={"default": "1h"})
    mode: Literal["enforce", "dry-run", "off"] = Field("enforce", description="enforce, dry-run or off.")
    approval: Literal["none", "required"] = Field("none", description="required: a person approves each decision.")
    for_: Duration = Field(timedelta(0), alias="for", json_schema_extra={"default": "0s"},
                           description="The condition must hold on every evaluation for this long before it fires.")
    keep_firing_for: Duration = Field(timedelta(0), json_schema_extra={"default": "0s"},
                                      description="Once firing, keep firing this long after the condition last held.")
    rate_limit: RateLimit | None = Field(None, description="At most max acting decisions per model within per.")
    approval_timeout: Duration = Field(timedelta(hours=24), json_schema_extra={"default": "24h"},
                                       description="An awaiting_approval decision expires after this (0: never).")
    never_with: list[Exclusion] = Field(default_factory=list,
                                        description="Never act within a window after these actions on the model.")
    defer: Defer | None = Field(None, description="Run the action later, between earliest and deadline.")
    verify: Verify | None = Field(None, description="What must hold after the action, and what to do otherwise.")
    notify: list[Annotated[str, StringConstraints(pattern=CHANNEL_NAME_PATTERN)]] = Field(
        default_factory=list, description="Notification channels that hear about every decision of this policy.")
    effects: Effects = Field(default_factory=dict,
                             description="Expected improvement per quality dimension of spec.action (with alternatives).")
    alternatives: list[Alternative] = Field(
        default_factory=list, description="Other candidate actions; the one with the highest utility is taken.")
    utility: dict[QualityDimension, float] | None = Field(
        None, description="Weights of this policy's utility; default: plan.utility of the settings.")

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted `off` as the boolean false.
        return "off" if value is False else value


class Policy(_Strict):
    """One policy document, as written in a YAML file under ``policies/``.

    Parameters
    ----------
    apiVersion : {"mape/v1"}
        Version of this format.
    kind : {"Policy"}
        Always ``Policy``.
    metadata : Metadata
        Name, owner, description, labels.
    spec : PolicySpec
        Selector, conditions, action and how decisions are treated.

    Examples
    --------
    >>> policy = Policy.model_validate({
    ...     "apiVersion": "mape/v1", "kind": "Policy", "metadata": {"name": "retrain-on-drift"},
    ...     "spec": {"when": "drift.share_drifted > 0.3", "action": {"type": "retrain"}, "cooldown": "6h"},
    ... })
    >>> policy.spec.cooldown, policy.spec.mode, policy.spec.selector.models
    (datetime.timedelta(seconds=21600), 'enforce', ['*'])
    """

    apiVersion: Literal["mape/v1"] = Field(description="Version of the policy format.")  # noqa: N815 - the file's key
    kind: Literal["Policy"] = Field(description="Always Policy.")
    metadata: Metadata
    spec: PolicySpec

    @property
    def name(self) -> str:
        return self.metadata.name

    def __str__(self) -> str:
        return f"policy {self.metadata.name}"


def _summaries(schema: dict[str, Any]) -> None:
    """Keep only the summary line of class docstrings (numpydoc sections are noise in an editor tooltip)."""
    for definition in [schema, *schema.get("$defs", {}).values()]:
        description = definition.get("description")
        if isinstance(description, str):
            definition["description"] = description.strip().split("\n\n")[0].replace("\n", " ")


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema of a policy document, for editors and external validators.

    >>> schema = policy_json_schema()
    >>> schema["title"], sorted(schema["required"])
    ('Policy', ['apiVersion', 'kind', 'metadata', 'spec'])
    """
    schema = Policy.model_json_schema()
    _summaries(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def policy_schema_text() -> str:
    """The schema as the text of ``policies/policy.schema.json`` (sorted keys, two-space indent, final newline)."""
    return json.dumps(policy_json_schema(), indent=2, sort_keys=True) + "\n"
