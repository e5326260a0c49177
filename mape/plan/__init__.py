"""The Plan stage: turn open symptoms and fresh signals into decisions, by policy.

What it does: policies are YAML files (:mod:`mape.plan.policy` is their
format, :mod:`mape.plan.loader` reads a directory of them, refusing bad files
one by one). Each tick, :class:`~mape.plan.planner.Planner` builds the
evaluation context of every managed model from the knowledge base
(:mod:`mape.plan.context`), evaluates the CEL conditions of the policies that
select the model (:mod:`mape.plan.expressions`), applies ``for`` and
``keep_firing_for`` (:mod:`mape.plan.firing`, state in the knowledge base), and
writes one :class:`knowledge.tables.Decision` row per firing policy: proposed,
awaiting approval, dry-run or suppressed (paused, busy model, cooldown, rate
limit, outranked), with at most one acting decision per model per tick.
Decisions left awaiting approval past their policy's ``approval_timeout``
expire at the next pass.

Who calls it: the controller loads the policies at start (and on reload) with
:func:`load_policies`, builds a :class:`Planner`, and calls
:meth:`Planner.plan` once per tick; ``mape policy validate`` calls
:func:`load_policy_paths` and :func:`find_overlaps` (policies that can
fight, :mod:`mape.plan.overlap`). The execute stage reads the
decisions from the knowledge base, never from this package.
"""

from __future__ import annotations

from mape.plan.context import CONTEXT_ROOTS, build_context
from mape.plan.expressions import Condition, ConditionError
from mape.plan.loader import (
    LoadedPolicy,
    PolicyLoadResult,
    check_policy_text,
    is_policy_file,
    load_policies,
    load_policy_paths,
    load_policy_text,
    record_policies,
)
from mape.plan.overlap import Overlap, find_overlaps
from mape.plan.planner import DEFAULT_SAFETY_ORDER, EvaluationError, Planner, PlanReport, selects
from mape.plan.policy import Policy, policy_json_schema

__all__ = [
    "CONTEXT_ROOTS",
    "DEFAULT_SAFETY_ORDER",
    "Condition",
    "ConditionError",
    "EvaluationError",
    "LoadedPolicy",
    "Overlap",
    "PlanReport",
    "Planner",
    "Policy",
    "PolicyLoadResult",
    "build_context",
    "check_policy_text",
    "find_overlaps",
    "is_policy_file",
    "load_policies",
    "load_policy_paths",
    "load_policy_text",
    "policy_json_schema",
    "record_policies",
    "selects",
]
