"""Where the Prefect UI is: the environment, then mape's configuration, then the active Prefect profile."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashboard.flow_runs import flow_run_url, prefect_ui_url
from mape.config import Settings


@pytest.fixture
def bare(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No Prefect variable set; the profiles file is ``tmp_path/profiles.toml`` (not written yet)."""
    for name in ("PREFECT_UI_URL", "PREFECT_API_URL", "PREFECT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PREFECT_PROFILES_PATH", str(tmp_path / "profiles.toml"))
    return tmp_path / "profiles.toml"


def _settings(api_url: str | None = None) -> Settings:
    return Settings.model_validate({"prefect": {"api_url": api_url}})


def test_nothing_named_means_no_link(bare: Path):
    assert prefect_ui_url(_settings()) is None and flow_run_url(_settings(), "abc") is None


def test_the_environment_comes_first_then_the_configuration(bare: Path, monkeypatch: pytest.MonkeyPatch):
    configured = _settings("http://prefect.internal:4200/api")
    assert flow_run_url(configured, "abc") == "http://prefect.internal:4200/runs/flow-run/abc"
    monkeypatch.setenv("PREFECT_API_URL", "https://prefect.example/api/")
    assert prefect_ui_url(configured) == "https://prefect.example"
    monkeypatch.setenv("PREFECT_UI_URL", "https://ui.example/")
    assert prefect_ui_url(configured) == "https://ui.example"


def test_the_active_profile_is_read_when_nothing_else_names_a_server(bare: Path, monkeypatch: pytest.MonkeyPatch):
    bare.write_text('active = "work"\n[profiles.ephemeral]\n[profiles.work]\n'
                    'PREFECT_API_URL = "http://10.0.0.5:4200/api"\n'
                    '[profiles.other]\nPREFECT_UI_URL = "http://other:4200"\n')
    assert prefect_ui_url(_settings()) == "http://10.0.0.5:4200"
    monkeypatch.setenv("PREFECT_PROFILE", "other")
    assert prefect_ui_url(_settings()) == "http://other:4200"
    bare.write_text("not [toml")
    assert prefect_ui_url(_settings()) is None
