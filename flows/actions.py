"""The action flow: one Prefect flow run per action attempt, so each shows in Prefect's UI.

Who calls it: the tick flow, as a subflow for every action run that is due.
The flow itself holds no logic: the executor claims the run atomically and
records its outcome, so a retried or duplicated flow run cannot act twice.
"""


from datetime import datetime

from prefect import flow
from prefect.runtime import flow_run

from flows.controllers import controller_for


@flow(name="mape-action", flow_run_name="action-run-{action_run_id}", log_prints=False)
def action_flow(action_run_id: int, at: datetime, config_file: str | None = None) -> str | None:
    """Run one attempt of action run ``action_run_id`` at logical time ``at``; returns its final state."""
    controller = controller_for(config_file)
    run = controller.executor.run(action_run_id, at, flow_run_id=str(flow_run.id) if flow_run.id else None)
    return run.state if run is not None else None
