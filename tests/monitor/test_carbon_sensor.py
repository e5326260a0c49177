"""CarbonSensor and its observations: the carbon.* signals policies read, and absent values on failure."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from examples.carbon import DIURNAL_GRID
from mape.errors import InvalidParameterError
from mape.monitor.carbon import CountryConstantProvider, SeriesProvider
from mape.monitor.carbon.provider import IntensityPoint
from mape.monitor.carbon.sensor import CarbonReport, CarbonSensor, carbon_observations
from mape.plan.fields import CONTEXT_FIELDS

UTC = timezone.utc
NOW = datetime(2026, 3, 10, 12, 10, tzinfo=UTC)


def points(start: datetime, values: list[float], step: timedelta = timedelta(minutes=30)) -> list[IntensityPoint]:
    return [IntensityPoint(start + i * step, v, "test") for i, v in enumerate(values)]


class ListProvider:
    """A provider over fixed points that counts the questions it is asked."""

    def __init__(self, current: IntensityPoint | None, forecast: list[IntensityPoint]) -> None:
        self._current, self._forecast, self.calls = current, forecast, 0

    def current(self, at: datetime) -> IntensityPoint | None:
        self.calls += 1
        return self._current

    def forecast(self, start: datetime, end: datetime) -> list[IntensityPoint]:
        self.calls += 1
        return [p for p in self._forecast if p.time < end]


class BrokenProvider:
    def current(self, at: datetime) -> IntensityPoint | None:
        raise RuntimeError("the grid operator's feed is down")

    def forecast(self, start: datetime, end: datetime) -> list[IntensityPoint]:
        raise RuntimeError("the grid operator's feed is down")


def test_report_of_a_series(tmp_path: Path):
    values = [200, 180, 120, 90, 90, 150, 300, 310]  # from 12:00, every 30 minutes
    series = tmp_path / "grid.csv"
    series.write_text("t,g\n" + "".join(f"{p.time.isoformat()},{p.g_per_kwh}\n"
                                        for p in points(NOW.replace(minute=0), values)))
    report = CarbonSensor(SeriesProvider(series), horizon=timedelta(hours=2)).measure(NOW)
    assert report.intensity == 200.0
    assert report.forecast_min == 90.0
    assert report.forecast_min_in_seconds == 80 * 60, "from 12:10 to 13:30, the first of two equal minima"
    # steps over [12:10, 14:10): 200 for 20 min, 180, 120 and 90 for 30 min each, 90 again for 10 min
    assert report.forecast_mean == pytest.approx((200 * 20 + (180 + 120 + 90) * 30 + 90 * 10) / 120)
    assert report.source == "series:grid.csv"


def test_the_minimum_in_force_now_is_zero_seconds_away():
    provider = ListProvider(points(NOW.replace(minute=0), [50])[0], points(NOW.replace(minute=0), [50, 80, 90]))
    report = CarbonSensor(provider, horizon=timedelta(hours=1)).measure(NOW)
    assert (report.forecast_min, report.forecast_min_in_seconds) == (50.0, 0.0)


def test_a_forecast_that_starts_later_is_completed_by_the_current_value():
    hour = NOW.replace(minute=0)
    provider = ListProvider(IntensityPoint(hour, 300.0, "api"), points(hour + timedelta(hours=1), [100, 200],
                                                                      timedelta(hours=1)))
    report = CarbonSensor(provider, horizon=timedelta(hours=3)).measure(NOW)
    assert report.intensity == 300.0
    assert report.forecast_min == 100.0 and report.forecast_min_in_seconds == 50 * 60
    # 300 for 50 min, 100 for 60 min, 200 for 60 min (the last step lasts one typical step, 1 h)
    assert report.forecast_mean == pytest.approx((300 * 50 + 100 * 60 + 200 * 60) / 170)


def test_a_constant_provider_gives_a_flat_forecast():
    provider = CountryConstantProvider("DEU")
    report = CarbonSensor(provider).measure(NOW)
    assert report.intensity == report.forecast_min == report.forecast_mean == provider.g_per_kwh
    assert report.forecast_min_in_seconds == 0.0
    assert report.source == "codecarbon:DEU"


def test_a_failing_provider_gives_absent_values_never_zero(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="mape.monitor.carbon.sensor"):
        report = CarbonSensor(BrokenProvider()).measure(NOW)
    assert report == CarbonReport(at=NOW)
    assert carbon_observations(1, NOW, report) == []
    assert len(caplog.records) == 2 and "feed is down" in caplog.records[0].getMessage()


def test_a_provider_without_values_gives_absent_values():
    report = CarbonSensor(ListProvider(None, [])).measure(NOW)
    assert (report.intensity, report.forecast_min, report.forecast_min_in_seconds, report.forecast_mean) == (
        None, None, None, None)


def test_a_forecast_without_a_current_value_still_reports_the_forecast():
    report = CarbonSensor(ListProvider(None, points(NOW, [120, 80]))).measure(NOW)
    assert report.intensity is None and report.forecast_min == 80.0
    assert [o.metric for o in carbon_observations(1, NOW, report)] == [
        "carbon.forecast_min", "carbon.forecast_min_in_seconds", "carbon.forecast_mean"]


def test_one_reading_per_tick_is_shared_by_every_model():
    provider = ListProvider(points(NOW, [100])[0], points(NOW, [100, 90]))
    sensor = CarbonSensor(provider)
    reports = {sensor.measure(NOW) for _ in range(100)}
    assert len(reports) == 1 and provider.calls == 2
    sensor.measure(NOW + timedelta(minutes=5))
    assert provider.calls == 4


def test_observations_are_exactly_the_declared_carbon_fields():
    report = CarbonSensor(SeriesProvider(DIURNAL_GRID)).measure(NOW)
    rows = carbon_observations(7, NOW, report)
    assert {r.metric.split(".", 1)[1] for r in rows} == CONTEXT_FIELDS["carbon"].fields
    assert all(r.sensor == "carbon" and r.labels == {} and r.model_id == 7 and r.time == NOW for r in rows)
    assert all(isinstance(r.value, float) for r in rows)
    json.dumps([r.model_dump(mode="json") for r in rows])


def test_bad_sensor_parameters():
    with pytest.raises(InvalidParameterError, match="The 'horizon' parameter of CarbonSensor"):
        CarbonSensor(CountryConstantProvider(), horizon=timedelta(0))
    with pytest.raises(InvalidParameterError, match="The 'provider' parameter of CarbonSensor"):
        CarbonSensor(object())  # type: ignore[arg-type]


# --------------------------------------------------------------------------- codecarbon's constant


def test_country_constant_is_codecarbons_offline_figure():
    import codecarbon

    mix = json.loads((Path(codecarbon.__file__).parent / "data/private_infra/global_energy_mix.json").read_text())
    provider = CountryConstantProvider("deu")
    assert provider.g_per_kwh == pytest.approx(mix["DEU"]["carbon_intensity"])
    assert (provider.source, provider.country_name) == ("codecarbon:DEU", "Germany")
    assert provider.current(NOW) == IntensityPoint(NOW, provider.g_per_kwh, "codecarbon:DEU")
    assert provider.forecast(NOW, NOW + timedelta(hours=12)) == [provider.current(NOW)]
    assert provider.forecast(NOW, NOW) == []


def test_unknown_country_is_the_stated_world_average(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="mape.monitor.carbon.codecarbon_constant"):
        provider = CountryConstantProvider("ATL")
    assert provider.g_per_kwh == 475.0 and provider.source == "codecarbon:world-average"
    assert "no carbon intensity for country 'ATL'; using the world average, 475" in caplog.text
    assert CountryConstantProvider().source == "codecarbon:world-average"
