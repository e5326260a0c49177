"""Run one attempt of a retrain and die (SIGKILL) the moment its canary's replicas have started.

Run as ``python -m tests.execute.canary_crash DB_URL SERVING_JSON DIRECTORY RUN_ID AT`` by
``tests/execute/test_canary_orphans.py`` (model ``ranker`` of
:mod:`tests.execute.canary_world`, its files under ``DIRECTORY``, with the
``serving`` section given as JSON): a real executor claims the run and
runs the real ``retrain`` (training, gate, canary start with real
model-server processes); the process kills itself right after
:func:`mape.execute.placement.place` returned inside
:func:`mape.execute.canary.begin.begin`, before the attempt's transaction
commits. That is the lost attempt whose replicas nothing owns: they run on
(their own sessions), no canary row names them, and the run is left
``running`` for reconciliation. It exits 3 if it was not killed.
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import datetime
from pathlib import Path


def main(db_url: str, serving_json: str, directory: str, run_id: str, at: str) -> int:
    import importlib
    import json

    from knowledge.database import create_engine_for
    from mape.config import ModelConfig
    import mape.execute.actions  # noqa: F401 - registers the built-in actions on the default registry
    from mape.execute.executor import Executor
    from mape.execute.registry import default_registry
    from tests.execute.canary_world import model_settings

    begin = importlib.import_module("mape.execute.canary.begin")  # the module (the package exports the function)
    place = begin.place

    def place_then_die(target, replicas):  # type: ignore[no-untyped-def]
        place(target, replicas)
        os.kill(os.getpid(), signal.SIGKILL)

    begin.place = place_then_die  # the crash point: replicas started, transaction not committed
    config = ModelConfig.model_validate(model_settings(Path(directory), serving=json.loads(serving_json)))
    engine = create_engine_for(db_url)
    executor = Executor(engine, default_registry, models={config.name: config},
                        artifacts_dir=Path(directory) / "artifacts", serving_dir=Path(directory) / "serving")
    executor.run(int(run_id), datetime.fromisoformat(at))
    return 3


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
