"""One :class:`~mape.controller.Controller` per configuration file per process.

Flow runs receive only a configuration path (Prefect parameters must be plain
data), and both the tick flow and the action flows it starts need the same
controller: building it once per process keeps the drift reference fits and
loaded policies warm between ticks of a long-lived process. Once it is built,
the process's heap is settled (:func:`mape._util.heap.settle_heap`): what was
imported and loaded is frozen out of garbage collection, which a planning pass
over a large fleet would otherwise spend a fifth of its time walking. Its
reconciliation reads and corrects Prefect's action flow runs
(:class:`flows.prefect_runs.PrefectFlowRuns`).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from flows.prefect_runs import PrefectFlowRuns
from mape._util.heap import settle_heap
from mape.config import load_settings
from mape.controller import Controller


@lru_cache(maxsize=8)
def _controller(config_file: str | None, _env_key: tuple[tuple[str, str], ...]) -> Controller:
    controller = Controller(load_settings(config_file), flow_runs=PrefectFlowRuns())
    settle_heap()
    return controller


def controller_for(config_file: str | None) -> Controller:
    """The process's controller for ``config_file`` (``None``: ``$MAPE_CONFIG`` or ./mape.yaml)."""
    path = str(Path(config_file).resolve()) if config_file else None
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("MAPE_")))
    return _controller(path, env)
