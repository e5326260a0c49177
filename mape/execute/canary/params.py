"""The ``canary`` parameter of ``retrain``: the steps of traffic share and how long each one bakes.

Who calls it: :class:`mape.execute.actions.retrain.RetrainParams` holds one
(``spec.action.params.canary`` of a policy, checked when the policy file is
loaded, and again when each run starts); the canary of the Execute stage
(:mod:`mape.execute.canary.begin`, :mod:`mape.execute.canary.rollout`) reads
its steps.

In a policy::

    action:
      type: retrain
      params:
        window: 4h
        canary:
          steps: [0.1, {share: 0.5, bake: 2h}]   # shares of the replicas, increasing, each in (0, 1)
          bake: 1h                              # each step's bake time, unless the step gives its own

The candidate serves the first share once it passed the champion/challenger
gate, moves to the next share when the policy's ``verify`` held over the
step's bake time, and becomes production when the last step held.

>>> canary = CanaryParams.model_validate({"steps": [0.1, {"share": 0.5, "bake": "2h"}], "bake": "30m"})
>>> [(step.share, str(step.bake)) for step in canary.plan()]
[(0.1, '0:30:00'), (0.5, '2:00:00')]
>>> CanaryParams.model_validate({"steps": [0.5, 0.1], "bake": "1h"})
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for CanaryParams
steps
  Value error, shares must increase from step to step: steps[1] is 0.1, not above steps[0] (0.5) [...]
...
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mape._util.timeutil import format_duration, parse_duration

__all__ = ["CanaryParams", "CanaryStep", "PlannedStep"]

#: The most steps a canary may have (each bakes at least a tick, so more is never useful).
MAX_STEPS = 20


def _duration(value: Any) -> Any:
    return None if value is None else parse_duration(value)



def _positive(value: timedelta | None) -> timedelta | None:
    """A bake time, refused unless longer than 0."""
    if value is not None and value <= timedelta(0):
        raise ValueError("must be longer than 0")
    return value


class CanaryStep(BaseModel):
    """One step of a canary: the share of the replicas that serve the candidate, and its bake time."""

    model_config = ConfigDict(extra="forbid")

    share: float = Field(gt=0, lt=1, description="Share of the serving replicas (so of the traffic) the candidate "
                                                 "serves in this step, in (0, 1); after the last step it serves all.")
    bake: timedelta | None = Field(None, description="How long the policy's verify must hold before the next step; "
                                                     "none: the canary's bake.")

    _d = field_validator("bake", mode="before")(_duration)

    _p = field_validator("bake")(_positive)


@dataclass(frozen=True)
class PlannedStep:
    """A step with its bake time resolved (:meth:`CanaryParams.plan`)."""

    share: float
    bake: timedelta

    def as_dict(self) -> dict[str, Any]:
        return {"share": self.share, "bake": format_duration(self.bake)}


class CanaryParams(BaseModel):
    """Promote a candidate to a share of the traffic first, and widen only while verification holds.

    Parameters
    ----------
    steps : list of float or CanaryStep
        Shares of the serving replicas the candidate serves, one per step,
        increasing, each in (0, 1): ``[0.1, 0.5]``. A step may be a mapping
        ``{share, bake}`` with a bake time of its own.
    bake : timedelta, optional
        The bake time of every step without its own: the policy's
        ``verify.expect`` must hold over it (by the rules of ``verify``) for
        the canary to go on.
    """

    model_config = ConfigDict(extra="forbid")

    steps: list[CanaryStep] = Field(min_length=1, max_length=MAX_STEPS,
                                    description="Shares of the replicas the candidate serves, step by step.")
    bake: timedelta | None = Field(None, description="Bake time of each step that gives none of its own.")

    _d = field_validator("bake", mode="before")(_duration)

    @field_validator("steps", mode="before")
    @classmethod
    def _shares(cls, value: Any) -> Any:
        if isinstance(value, list):  # a bare number is a step's share
            return [{"share": item} if isinstance(item, (int, float)) and not isinstance(item, bool) else item
                    for item in value]
        return value

    _p = field_validator("bake")(_positive)

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[CanaryStep]) -> list[CanaryStep]:
        for index in range(1, len(steps)):
            if steps[index].share <= steps[index - 1].share:
                raise ValueError(f"shares must increase from step to step: steps[{index}] is {steps[index].share:g}, "
                                 f"not above steps[{index - 1}] ({steps[index - 1].share:g})")
        return steps

    @model_validator(mode="after")
    def _every_step_bakes(self) -> "CanaryParams":
        if self.bake is None:
            missing = [str(i) for i, step in enumerate(self.steps) if step.bake is None]
            if missing:
                raise ValueError(f"step(s) {', '.join(missing)} have no bake time: give canary.bake (for every "
                                 f"step), or each step a bake of its own, e.g. {{share: 0.1, bake: 1h}}")
        return self

    def plan(self) -> list[PlannedStep]:
        """The steps with their bake times resolved."""
        return [PlannedStep(step.share, step.bake or self.bake) for step in self.steps]  # type: ignore[arg-type]
