"""Keep Prefect's own database bounded: the settings of its ``db_vacuum`` service for the server we start.

Who calls it: ``mape run`` (:func:`flows.serve.local_prefect_server` gets
:func:`vacuum_environment` as its environment). Prefect 3.8.8's server has a
database vacuum service (``prefect/server/services/db_vacuum.py``): hourly, it
deletes top-level flow runs in a final state whose ``end_time`` is older than
``PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD`` (with their task runs,
states, logs and artifacts) when ``flow_runs`` is in
``PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED``, and events older than
``PREFECT_SERVER_EVENTS_RETENTION_PERIOD`` when ``events`` is (the default).
Deleting flow runs is off by default in Prefect; we turn it on with
``retention.prefect_flow_runs_for`` (at least 1 h, Prefect's minimum).

An external server (``prefect.api_url``) is its operator's: set the same
variables in its environment (:func:`vacuum_environment` prints them, and
``docs/DESIGN.md`` lists them). Prefect's ephemeral mode (``mape tick``
without a server) runs only the event vacuum.
"""

from __future__ import annotations

from mape.config import RetentionConfig

__all__ = ["vacuum_environment"]


def vacuum_environment(config: RetentionConfig) -> dict[str, str]:
    """The Prefect server settings that bound its database under ``config`` (whole seconds; ISO 8601 for events).

    >>> from datetime import timedelta
    >>> env = vacuum_environment(RetentionConfig(prefect_flow_runs_for=timedelta(days=2)))
    >>> env["PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED"], env["PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD"]
    ('events,flow_runs', '172800')
    >>> env["PREFECT_SERVER_EVENTS_RETENTION_PERIOD"]
    'PT172800S'
    """
    seconds = str(int(config.prefect_flow_runs_for.total_seconds()))
    return {
        "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs",
        "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": seconds,
        "PREFECT_SERVER_EVENTS_RETENTION_PERIOD": f"PT{seconds}S",  # a plain timedelta there: ISO 8601
    }
