"""Canary promotion: a retrained candidate serves a share of the replicas first, widened while verification holds.

Who calls it: the ``retrain`` effector starts a canary when its parameters
ask for one (:func:`begin`, with :class:`CanaryParams`); the controller moves
the running canaries on once per tick (:class:`CanaryRollout`), after the
Plan stage's verification judged their current steps
(:mod:`mape.plan.canary`). Everything a canary is and did lives in its
:class:`~knowledge.tables.Canary` row and the audit trail, so a restarted
controller carries on where the last one stopped.

The modules: :mod:`~mape.execute.canary.params` (the configuration),
:mod:`~mape.execute.canary.begin` (the first step),
:mod:`~mape.execute.canary.rollout` (the later steps, promotion and abort),
:mod:`~mape.execute.canary.orphans` (replicas a lost attempt left, which no
running canary owns, withdrawn by the executor and reconciliation).
"""

from mape.execute.canary.begin import begin, summary
from mape.execute.canary.params import CanaryParams, CanaryStep
from mape.execute.canary.rollout import CanaryMove, CanaryRollout, RolloutReport

__all__ = ["CanaryMove", "CanaryParams", "CanaryRollout", "CanaryStep", "RolloutReport", "begin", "summary"]
