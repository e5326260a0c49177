"""No telemetry leaves the machine by default: Prefect's analytics are off unless a user turns them on."""

from __future__ import annotations

import os
import subprocess
import sys


def _analytics_setting(env: dict[str, str], module: str) -> str:
    code = (f"import {module}\n"
            "from prefect.settings import get_current_settings\n"
            "print(get_current_settings().server.analytics_enabled)")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_importing_the_flows_or_the_cli_turns_prefect_analytics_off():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    assert _analytics_setting(env, "flows") == "False"
    assert _analytics_setting(env, "mape.cli") == "False"


def test_a_user_who_turns_analytics_on_is_obeyed():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "true"
    assert _analytics_setting(env, "flows") == "True"
