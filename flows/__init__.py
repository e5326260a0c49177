"""Prefect flows of mape: the tick, the action flow, and the deployment served by ``mape run``.

Importing this package turns Prefect's telemetry off unless the user has set
it explicitly: nothing leaves the machine by default.
"""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY", "false")
