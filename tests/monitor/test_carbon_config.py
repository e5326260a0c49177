"""CarbonConfig (the ``carbon`` settings) and provider_from_config."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from examples.carbon import DIURNAL_GRID
from mape.config import CarbonConfig
from mape.errors import ConfigError
from mape.monitor.carbon import (
    CarbonSensor,
    CountryConstantProvider,
    ElectricityMapsProvider,
    SeriesProvider,
    UKCarbonIntensityProvider,
    provider_from_config,
    sensor_from_config,
)


def test_defaults_are_codecarbon_world_average_with_a_12_hour_horizon():
    cfg = CarbonConfig()
    assert (cfg.provider, cfg.country_iso_code, cfg.horizon, cfg.cache_ttl) == (
        "codecarbon", None, timedelta(hours=12), timedelta(minutes=5))
    provider = provider_from_config(cfg)
    assert isinstance(provider, CountryConstantProvider) and provider.source == "codecarbon:world-average"
    assert isinstance(provider_from_config(None), CountryConstantProvider)


def test_each_provider_is_built_from_its_own_fields(monkeypatch: pytest.MonkeyPatch):
    series = provider_from_config(CarbonConfig(provider="series", path=DIURNAL_GRID, repeat=True))
    assert isinstance(series, SeriesProvider) and series.repeat
    assert provider_from_config(CarbonConfig(provider="codecarbon", country_iso_code="FRA")).source == "codecarbon:FRA"
    uk = provider_from_config(CarbonConfig(provider="uk", region=13, base_url="http://127.0.0.1:1/", timeout=1,
                                           cache_ttl="30s"))
    assert isinstance(uk, UKCarbonIntensityProvider)
    assert (uk.region, uk.base_url, uk.timeout, uk.cache_ttl) == (13, "http://127.0.0.1:1", 1.0, timedelta(seconds=30))
    monkeypatch.setenv("MY_EM_TOKEN", "t0ken")
    em = provider_from_config(CarbonConfig(provider="electricitymaps", zone="DE", token_env="MY_EM_TOKEN"))
    assert isinstance(em, ElectricityMapsProvider)
    assert (em.zone, em.base_url) == ("DE", "https://api.electricitymap.org")
    assert em._fetcher.headers["auth-token"] == "t0ken" and "t0ken" not in repr(em)


def test_durations_are_read_like_every_other_duration():
    cfg = CarbonConfig(provider="uk", horizon="6h", cache_ttl=0)
    assert (cfg.horizon, cfg.cache_ttl) == (timedelta(hours=6), timedelta(0))
    sensor = sensor_from_config(cfg)
    assert isinstance(sensor, CarbonSensor) and sensor.horizon == timedelta(hours=6)


@pytest.mark.parametrize(("fields", "message"), [
    ({"provider": "series"}, "provider 'series' needs 'path'"),
    ({"provider": "electricitymaps"}, "provider 'electricitymaps' needs 'zone'"),
    ({"provider": "electricitymaps", "zone": "DE", "token_env": "MAPE_TEST_UNSET_TOKEN"},
     "environment variable MAPE_TEST_UNSET_TOKEN \\('token_env'\\), which is not set"),
    ({"provider": "uk", "zone": "GB"}, "provider 'uk' does not read 'zone' \\('zone' is read by electricitymaps\\)"),
    ({"provider": "series", "path": "x.csv", "base_url": "http://h"},
     "'base_url' is read by electricitymaps and uk"),
    ({"country_iso_code": "Germany"}, "String should match pattern"),
    ({"provider": "uk", "region": 0}, "greater than or equal to 1"),
    ({"horizon": "0s"}, "horizon must be longer than 0"),
    ({"provider": "wattime"}, "Input should be 'series', 'codecarbon', 'electricitymaps' or 'uk'"),
    ({"token": "abc"}, "Extra inputs are not permitted"),
    ({"provider": "electricitymaps", "zone": "DE", "token_env": "not a name"}, "String should match pattern"),
])
def test_invalid_settings_name_the_field(fields: dict[str, object], message: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MAPE_TEST_UNSET_TOKEN", raising=False)
    with pytest.raises(ValidationError, match=message):
        CarbonConfig(**fields)


def test_a_token_gone_from_the_environment_is_a_config_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MY_EM_TOKEN", "t0ken")
    cfg = CarbonConfig(provider="electricitymaps", zone="DE", token_env="MY_EM_TOKEN")
    with pytest.raises(ConfigError, match="mape.yaml: carbon.token_env: environment variable MY_EM_TOKEN"):
        provider_from_config(cfg, environ={}, source="mape.yaml")


def test_an_unreadable_series_is_a_config_error_naming_file_and_row(tmp_path: Path):
    path = tmp_path / "grid.csv"
    path.write_text("t,g\n2026-03-10T12:00Z,1\n2026-03-10T12:30Z,lots\n")
    with pytest.raises(ConfigError, match=r"mape.yaml: carbon.path: .*grid.csv, line 3: intensity 'lots' is not"):
        provider_from_config(CarbonConfig(provider="series", path=path), source="mape.yaml")
