"""``mape run``: serve the tick flow on an interval with Prefect, until SIGTERM.

Prefect's runner polls for scheduled runs of the deployment and executes each
tick in a subprocess; on SIGTERM it stops taking new runs and exits cleanly.
"""

from __future__ import annotations

from datetime import timedelta

from flows.tick import tick_flow


def serve(config_file: str | None, *, interval: timedelta, name: str = "mape-controller") -> None:
    tick_flow.serve(
        name=name, interval=interval, parameters={"config_file": config_file},
        description="The mape controller: one tick of the MAPE-K loop per interval.",
        pause_on_shutdown=False,
    )
