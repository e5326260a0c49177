"""Carbon- and price-aware scheduling: when to run a job that may wait.

Pure functions over series, no knowledge base: one job per module.

* :mod:`.window`: step functions (:class:`Steps`) and the exact sliding-window
  search for the best start (:func:`best_window`), on carbon intensity, price
  or a weighted, normalised mix.
* :mod:`.trace`: recorded series from CSV or Parquet onto a regular grid
  (:func:`read_trace`), with errors naming the file, the row and the value.
* :mod:`.forecast`: forecasters for backtests (``perfect``, ``noisy:SIGMA``,
  ``naive``, ``past``).
* :mod:`.backtest`: a year of jobs replayed, planned on a forecast and
  realised on the actual series, with the guard that defers only when the
  predicted gain exceeds the forecaster's recent error.
* :mod:`.request`: one request on recorded series (``mape carbon plan``).
* :mod:`.recent_error`: the guard's rule (a predicted gain against the
  realised gains of scored shadow searches), shared by the backtest and the
  live deferral.
* :mod:`.shadow`: the live shadow searches and their scoring on the actual
  series (stored by :mod:`mape.plan.forecast_guard`).

Who calls it: ``mape carbon plan`` and ``mape carbon backtest``, the planner's
deferral (:class:`mape.plan.planner.Planner`, with a forecast the controller
passes in), ``benchmarks/carbon_backtest.py`` and the tests.
"""

from mape.plan.scheduling.backtest import BacktestResult, JobRecord, backtest
from mape.plan.scheduling.forecast import Forecaster, make_forecaster
from mape.plan.scheduling.request import plan_job
from mape.plan.scheduling.trace import Trace, read_trace
from mape.plan.scheduling.window import OBJECTIVES, Steps, Window, best_window, objective_weights

__all__ = ["OBJECTIVES", "BacktestResult", "Forecaster", "JobRecord", "Steps", "Trace", "Window", "backtest",
           "best_window", "make_forecaster", "objective_weights", "plan_job", "read_trace"]
