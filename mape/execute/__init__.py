"""The Execute stage: decisions become action runs, and effectors carry them out.

Who calls it: the controller dispatches decisions into action runs
(:class:`mape.execute.executor.Executor`), and the Prefect action flow in
:mod:`flows.actions` runs each one through the executor;
:mod:`mape.execute.reconcile` settles, first in every tick, the runs a dead
process left behind (:mod:`mape.execute.claims` tells who). Effectors are plain
functions registered with :func:`mape.execute.registry.action`; the built-in
ones (``retrain``, ``rollback``, ``rescale``, ``notify``) live in
:mod:`mape.execute.actions`. A ``retrain`` may start a canary; the controller
moves running canaries on once per tick (:mod:`mape.execute.canary`).
"""
