"""The energy meter (a real codecarbon tracker) and the emissions of energy on a varying grid."""

from __future__ import annotations

import json
import logging
import math
import socket
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import codecarbon
import pytest

from mape.data.energy import EnergyMeasurement, country_intensity, emissions_kg, measure_energy
from mape.errors import InvalidParameterError

UTC = timezone.utc


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, 10, hour, minute, tzinfo=UTC)


def busy(seconds: float) -> int:
    total, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        total += sum(i * i for i in range(2_000))
    return total


# --------------------------------------------------------------------------- measure_energy


def test_a_cpu_loop_uses_energy_on_this_machine():
    """codecarbon measures in this container (process mode, CPU share of the package's power, and RAM)."""
    with measure_energy(country_iso_code="DEU", measure_power_secs=1) as energy:
        busy(0.5)
    assert energy.error is None
    assert energy.kwh is not None and energy.kwh > 0
    assert energy.start is not None and energy.end is not None and energy.end - energy.start >= timedelta(seconds=0.5)
    parts = [p for p in (energy.cpu_kwh, energy.ram_kwh, energy.gpu_kwh) if p is not None]
    assert math.isclose(sum(parts), energy.kwh, rel_tol=1e-6)
    kg = energy.emissions_kg([(energy.start, 400.0)])
    assert kg == pytest.approx(energy.kwh * 0.4)


def test_codecarbon_neither_phones_home_nor_writes_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Even with a configuration that asks for every output, nothing leaves the process."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".codecarbon.config").write_text(
        "[codecarbon]\nsave_to_api = True\nsave_to_file = True\noutput_methods = api,csv,prometheus\n"
        "api_endpoint = http://203.0.113.7/api\n")
    for name, value in {"CODECARBON_SAVE_TO_API": "true", "CODECARBON_SAVE_TO_FILE": "true",
                        "CODECARBON_EMISSIONS_ENDPOINT": "http://203.0.113.7/emissions",
                        "CODECARBON_ELECTRICITYMAPS_API_TOKEN": "would-ask-electricity-maps",
                        "CODECARBON_CO2_SIGNAL_API_TOKEN": "would-ask-too",
                        "CODECARBON_OUTPUT_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: attempts.append(args) or [])
    with measure_energy(country_iso_code="GBR", measure_power_secs=1) as energy:
        busy(0.2)
    assert attempts == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [".codecarbon.config"]
    assert energy.kwh is not None and energy.error is None


def test_a_failing_codecarbon_gives_none_and_one_log_line(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture):
    class Broken:
        def __init__(self, **kwargs: object) -> None:
            raise RuntimeError("no CPU information")

    monkeypatch.setattr(codecarbon, "OfflineEmissionsTracker", Broken)
    with caplog.at_level(logging.WARNING, logger="mape.data.energy"):
        with measure_energy() as energy:
            busy(0.01)
    assert energy.kwh is None and energy.end is not None
    assert energy.error == "codecarbon could not start: RuntimeError: no CPU information"
    assert [r.getMessage() for r in caplog.records] == [
        "Energy measurement is off for this run; codecarbon could not start: RuntimeError: no CPU information"]
    assert energy.emissions_kg([(at(12), 300.0)]) is None


@pytest.mark.parametrize(("stop", "data", "error"), [
    ("raise", None, "codecarbon could not stop: OSError: counter vanished"),
    ("ok", None, "codecarbon reported no energy"),
    ("ok", type("Data", (), {"energy_consumed": float("nan")})(), "codecarbon reported no energy"),
])
def test_a_tracker_that_cannot_stop_or_report_gives_none(monkeypatch: pytest.MonkeyPatch, stop: str, data: object,
                                                         error: str):
    class Tracker:
        def __init__(self, **kwargs: object) -> None:
            pass

        def start(self) -> None:
            pass

        def stop(self) -> None:
            if stop == "raise":
                raise OSError("counter vanished")
            if data is not None:
                self.final_emissions_data = data

    monkeypatch.setattr(codecarbon, "OfflineEmissionsTracker", Tracker)
    with measure_energy() as energy:
        pass
    assert (energy.kwh, energy.error) == (None, error)


def test_the_blocks_own_exception_goes_on_and_the_energy_is_still_measured():
    with pytest.raises(ZeroDivisionError):
        with measure_energy(measure_power_secs=1) as energy:
            busy(0.05)
            1 / 0  # noqa: B018
    assert energy.end is not None and (energy.kwh is not None or energy.error is not None)


def test_the_clock_gives_start_and_end():
    times = iter([at(12), at(13)])
    with measure_energy(clock=lambda: next(times)) as energy:
        pass
    assert (energy.start, energy.end) == (at(12), at(13))


# --------------------------------------------------------------------------- emissions_kg


def test_constant_intensity_is_energy_times_intensity():
    assert emissions_kg(3.0, [(at(11), 250.0)], at(12), at(14)) == pytest.approx(0.75)


def test_energy_is_spread_evenly_and_weighted_by_the_step_function():
    # 12:00-13:00 at 100 g (from the 11:30 step), 13:00-13:30 at 400 g, 13:30-14:00 at 40 g
    steps = [(at(13, 30), 40.0), (at(11, 30), 100.0), (at(13), 400.0), (at(15), 999.0)]
    expected = 4.0 * (100 * 60 + 400 * 30 + 40 * 30) / 120 / 1000
    assert emissions_kg(4.0, steps, at(12), at(14)) == pytest.approx(expected)


def test_before_the_first_sample_the_first_value_holds():
    assert emissions_kg(1.0, [(at(13), 200.0), (at(14), 100.0)], at(12), at(14)) == pytest.approx(0.2)


def test_a_zero_length_run_uses_the_value_in_force():
    assert emissions_kg(0.5, [(at(11), 100.0), (at(12), 300.0)], at(12), at(12)) == pytest.approx(0.15)


def test_unknown_is_none_never_zero():
    assert emissions_kg(None, [(at(12), 100.0)], at(12), at(13)) is None
    assert emissions_kg(1.0, [], at(12), at(13)) is None
    assert emissions_kg(1.0, [(at(12), float("nan")), (at(12, 30), None)], at(12), at(13)) is None  # type: ignore[list-item]


def test_intensity_points_and_naive_times_work():
    from mape.monitor.carbon.provider import IntensityPoint

    points = [IntensityPoint(at(12), 100.0, "x"), IntensityPoint(at(12, 30), 300.0, "x")]
    assert emissions_kg(2.0, points, datetime(2026, 3, 10, 12), datetime(2026, 3, 10, 13)) == pytest.approx(0.4)


def test_emissions_over_the_shipped_trace_match_its_mean():
    from examples.carbon import DIURNAL_GRID
    from mape.monitor.carbon.series import SeriesProvider

    grid = SeriesProvider(DIURNAL_GRID)
    steps = grid.forecast(at(12), at(14))
    assert len(steps) == 4
    mean = sum(p.g_per_kwh for p in steps) / 4
    assert emissions_kg(10.0, steps, at(12), at(14)) == pytest.approx(10.0 * mean / 1000)


@pytest.mark.parametrize(("kwh", "start", "end", "name"), [
    (-1.0, at(12), at(13), "kwh"),
    (float("inf"), at(12), at(13), "kwh"),
    (1.0, at(13), at(12), "end"),
])
def test_bad_arguments(kwh: float, start: datetime, end: datetime, name: str):
    with pytest.raises(InvalidParameterError, match=f"The '{name}' parameter of emissions_kg"):
        emissions_kg(kwh, [(at(12), 100.0)], start, end)


def test_an_empty_measurement_has_no_emissions():
    assert EnergyMeasurement().emissions_kg([(at(12), 100.0)]) is None


# --------------------------------------------------------------------------- country_intensity


def test_country_intensity_is_codecarbons_packaged_figure():
    mix = json.loads((Path(codecarbon.__file__).parent / "data/private_infra/global_energy_mix.json").read_text())
    germany = country_intensity("DEU")
    assert germany.g_per_kwh == pytest.approx(mix["DEU"]["carbon_intensity"])
    assert (germany.country_iso_code, germany.country_name) == ("DEU", "Germany")
    assert country_intensity(None) == country_intensity("???")
    assert country_intensity(None).country_iso_code is None and country_intensity(None).g_per_kwh == 475.0
