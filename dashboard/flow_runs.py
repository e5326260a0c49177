"""Links to Prefect flow runs: where the Prefect UI shows an action run's flow run.

Who calls it: dashboard pages that show an action run (the Decisions page's
detail). A flow run's page is ``<ui>/runs/flow-run/<id>``. ``<ui>`` is, in
the order Prefect itself would see them when ``mape run`` starts:
``PREFECT_UI_URL`` or ``PREFECT_API_URL`` from the environment (an API URL
without its trailing ``/api``), then the configuration's ``prefect.api_url``
(which ``mape run`` exports), then the same two settings in the active
Prefect profile (``PREFECT_PROFILE`` or the file's ``active``, in
``PREFECT_PROFILES_PATH``, by default ``$PREFECT_HOME/profiles.toml``). With
none, no link: the page shows the id. The profile file is read here rather
than through :mod:`prefect.settings`, whose import took 1.5-2.4 s in the
dashboard's process on the 2-core machine: more than a page may take.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from mape.config import Settings


def _ui_of_api(api_url: str) -> str:
    """The UI's address of an API URL: ``http://host:4200/api`` -> ``http://host:4200``.

    >>> _ui_of_api("http://127.0.0.1:4200/api/")
    'http://127.0.0.1:4200'
    """
    url = api_url.rstrip("/")
    return url[: -len("/api")] if url.endswith("/api") else url


def _profile() -> dict[str, Any]:
    """The active Prefect profile's settings ({} when there is no profiles file or it cannot be read)."""
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    active = os.environ.get("PREFECT_PROFILE") or document.get("active") or "ephemeral"
    profile = document.get("profiles", {}).get(active, {})
    return profile if isinstance(profile, dict) else {}


def prefect_ui_url(settings: Settings) -> str | None:
    """The Prefect UI's base address, or None when nothing names a Prefect server (local, ephemeral mode)."""
    if os.environ.get("PREFECT_UI_URL"):
        return os.environ["PREFECT_UI_URL"].rstrip("/")
    if os.environ.get("PREFECT_API_URL"):
        return _ui_of_api(os.environ["PREFECT_API_URL"])
    if settings.prefect.api_url:
        return _ui_of_api(settings.prefect.api_url)
    profile = _profile()
    if profile.get("PREFECT_UI_URL"):
        return str(profile["PREFECT_UI_URL"]).rstrip("/")
    if profile.get("PREFECT_API_URL"):
        return _ui_of_api(str(profile["PREFECT_API_URL"]))
    return None


def flow_run_url(settings: Settings, flow_run_id: str) -> str | None:
    """The Prefect UI page of flow run ``flow_run_id``, or None when no Prefect UI is known.

    A page that links many runs asks :func:`prefect_ui_url` once and appends
    ``/runs/flow-run/<id>`` itself (each call here may read the profiles file).
    """
    ui = prefect_ui_url(settings)
    return f"{ui}/runs/flow-run/{flow_run_id}" if ui else None
