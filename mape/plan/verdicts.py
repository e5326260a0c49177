"""What a verification pass reports: the verdicts it took and the canary steps it judged.

Who calls it: :mod:`mape.plan.verification` and :mod:`mape.plan.canary` fill
a :class:`VerificationReport` in one pass; the controller folds it into the
tick report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mape.plan.expressions import Condition, ConditionError, prepare

__all__ = ["VerdictRecord", "VerificationReport"]


@dataclass(frozen=True)
class VerdictRecord:
    """One verdict taken in a pass.

    Parameters
    ----------
    run_id : int
        The action run judged.
    model, policy, action : str
        Its model, its decision's policy, its action type.
    verdict : str
        ``pass``, ``fail`` or ``inconclusive``.
    true, false, errors : int
        The evaluation counts over the bake time.
    outcome : str
        ``none``, ``rollback`` (proposed), ``awaiting_approval`` (a rollback
        a person decides on), ``escalated`` (no rollback possible: a person
        must look) or ``canary_aborted`` (a canary step did not hold: its
        candidate is withdrawn, production was never changed).
    decision_id : int, optional
        The follow-up decision, if one was written.
    """

    run_id: int
    model: str
    policy: str
    action: str
    verdict: str
    true: int
    false: int
    errors: int
    outcome: str
    decision_id: int | None = None

    def __str__(self) -> str:
        follow = f", decision {self.decision_id}" if self.decision_id is not None else ""
        return (f"{self.action} run {self.run_id} of policy {self.policy} on model {self.model}: {self.verdict} "
                f"({self.true} true, {self.false} false, {self.errors} errors); {self.outcome}{follow}")


@dataclass
class VerificationReport:
    """What one :meth:`Verifier.verify` pass did.

    Parameters
    ----------
    at : datetime
        The tick's logical time.
    started : list of int
        Runs whose verification started in this pass.
    evaluated : int
        Expectations evaluated (each counted true, false or error).
    verdicts : list of VerdictRecord
        Verdicts taken in this pass (a canary step that did not hold is one: its run's verdict).
    errors : list of str
        Evaluations that failed (counted as errors on their runs), as log sentences.
    canary_steps : list of str
        Canary steps judged in this pass, as log sentences (:mod:`mape.plan.canary`).
    """

    at: datetime
    started: list[int] = field(default_factory=list)
    evaluated: int = 0
    verdicts: list[VerdictRecord] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    canary_steps: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "started": list(self.started),
            "evaluated": self.evaluated,
            "verdicts": [dict(vars(v)) for v in self.verdicts],
            "errors": list(self.errors),
            "canary_steps": list(self.canary_steps),
        }

    def __str__(self) -> str:
        return (f"verification at {self.at.isoformat()}: {self.evaluated} evaluated, "
                f"{len(self.verdicts)} verdicts, {len(self.errors)} errors")


def reading(condition: Condition | ConditionError, context: dict[str, Any] | None) -> tuple[bool | None, str | None]:
    """One evaluation of a ``verify`` expectation: its value, or None and why (an error, never a failure).

    ``condition`` is the compiled expectation or the error compiling it gave;
    ``context`` the model's context (None when it could not be built).
    """
    if isinstance(condition, ConditionError):
        return None, f"the expectation does not compile: {condition}"
    if context is None:
        return None, "the model's context is not available"
    try:
        return condition.evaluate(prepare(context)), None
    except ConditionError as exc:
        return None, str(exc)
