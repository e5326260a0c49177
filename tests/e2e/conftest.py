"""The demo run, once per test session: its knowledge base is what the demo and dashboard end-to-end tests read."""

from __future__ import annotations

from pathlib import Path

import pytest

from examples.credit.demo import run_demo


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> tuple[bool, list[str], Path]:
    """``(closed, printed lines, directory)`` of one demo run. Tests that change its knowledge base copy it first."""
    directory = tmp_path_factory.mktemp("demo") / "run"
    lines: list[str] = []
    ok = run_demo(directory, echo=lines.append)
    return ok, lines, directory
