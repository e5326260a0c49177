"""The live providers against recorded API responses served by a real HTTP server on loopback."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mape.errors import InvalidParameterError
from mape.monitor.carbon.http import ElectricityMapsProvider, UKCarbonIntensityProvider

RESPONSES = Path(__file__).with_name("carbon_responses")
NOW = datetime(2026, 3, 10, 12, 10, tzinfo=timezone.utc)
TOKEN = "test-token-not-a-secret"


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    delay: float = 0.0


@dataclass
class RecordedApi:
    """A loopback server answering GETs from ``routes`` (path with query → answer) and recording them."""

    url: str
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def serve(self, path: str, file: str | None = None, *, status: int = 200, body: bytes | None = None,
              delay: float = 0.0) -> None:
        content = body if body is not None else (RESPONSES / file).read_bytes() if file else b""
        self.routes[path] = Route(status, content, delay)

    def count(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)


@pytest.fixture
def api() -> Iterator[RecordedApi]:
    holder: dict[str, RecordedApi] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            recorded = holder["api"]
            recorded.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            route = recorded.routes.get(self.path, Route(404, b'{"error": "not found"}'))
            if route.delay:
                time.sleep(route.delay)
            try:
                self.send_response(route.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                self.wfile.write(route.body)
            except OSError:  # the client gave up (the timeout test)
                pass

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.block_on_close = False
    holder["api"] = RecordedApi(url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield holder["api"]
    finally:
        server.shutdown()
        server.server_close()


class FakeClock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def electricity_maps(api: RecordedApi, **kwargs: object) -> ElectricityMapsProvider:
    kwargs.setdefault("timeout", 2.0)
    return ElectricityMapsProvider(TOKEN, "DE", api.url, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- Electricity Maps


def test_electricity_maps_parses_latest_and_sends_the_token_header(api: RecordedApi):
    api.serve("/v3/carbon-intensity/latest?zone=DE", "electricitymaps_latest.json")
    point = electricity_maps(api).current(NOW)
    assert point is not None
    assert (point.time, point.g_per_kwh, point.source) == (datetime(2026, 3, 10, 12, tzinfo=timezone.utc), 302.0,
                                                          "electricitymaps:DE")
    (path, headers), = api.requests
    assert headers["auth-token"] == TOKEN
    assert headers["accept"] == "application/json"


def test_electricity_maps_forecast_is_cut_to_the_window(api: RecordedApi):
    api.serve("/v3/carbon-intensity/forecast?zone=DE", "electricitymaps_forecast.json")
    points = electricity_maps(api).forecast(NOW, NOW + timedelta(hours=6))
    assert [p.time.hour for p in points] == [13, 14, 15, 16, 17, 18]
    assert [p.g_per_kwh for p in points] == [192.0, 174.0, 194.0, 249.0, 321.0, 379.0]
    assert api.requests[0][1]["auth-token"] == TOKEN


def test_the_token_is_not_in_repr_or_log_lines(api: RecordedApi, caplog: pytest.LogCaptureFixture):
    api.serve("/v3/carbon-intensity/latest?zone=DE", status=401, body=b'{"error": "invalid token"}')
    provider = electricity_maps(api)
    with caplog.at_level(logging.WARNING):
        assert provider.current(NOW) is None
    assert TOKEN not in repr(provider) and TOKEN not in caplog.text
    assert api.count("/v3/carbon-intensity/latest?zone=DE") == 1, "a refused token is not retried"
    assert "HTTP 401" in caplog.text


def test_a_server_error_is_retried_once_then_absent_with_one_log_line(api: RecordedApi,
                                                                     caplog: pytest.LogCaptureFixture):
    api.serve("/v3/carbon-intensity/latest?zone=DE", status=500, body=b"oops")
    api.serve("/v3/carbon-intensity/forecast?zone=DE", status=503, body=b"")
    provider = electricity_maps(api)
    provider._fetcher.retry_delay = 0.01
    with caplog.at_level(logging.WARNING, logger="mape.monitor.carbon.http"):
        assert provider.current(NOW) is None
        assert provider.forecast(NOW, NOW + timedelta(hours=12)) == []
    assert api.count("/v3/carbon-intensity/latest?zone=DE") == 2
    assert api.count("/v3/carbon-intensity/forecast?zone=DE") == 2
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("Electricity Maps zone DE has no current carbon intensity") and "HTTP 500" in lines[0]


def test_a_timeout_is_absent_not_an_exception(api: RecordedApi, caplog: pytest.LogCaptureFixture):
    api.serve("/v3/carbon-intensity/latest?zone=DE", "electricitymaps_latest.json", delay=1.0)
    provider = electricity_maps(api, timeout=0.2)
    provider._fetcher.retry_delay = 0.01
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="mape.monitor.carbon.http"):
        assert provider.current(NOW) is None
    assert time.monotonic() - started < 0.9, "two attempts of 0.2 s, not the server's full second"
    assert api.count("/v3/carbon-intensity/latest?zone=DE") == 2
    assert "timed out" in caplog.text


def test_an_unreachable_api_is_absent(caplog: pytest.LogCaptureFixture):
    provider = ElectricityMapsProvider(TOKEN, "DE", "http://127.0.0.1:9", timeout=0.5)  # discard port: refused
    provider._fetcher.retry_delay = 0.01
    with caplog.at_level(logging.WARNING, logger="mape.monitor.carbon.http"):
        assert provider.current(NOW) is None
        assert provider.forecast(NOW, NOW + timedelta(hours=1)) == []
    assert len(caplog.records) == 2


def test_an_answer_of_another_shape_is_absent(api: RecordedApi, caplog: pytest.LogCaptureFixture):
    api.serve("/v3/carbon-intensity/latest?zone=DE", body=b'{"zone": "DE", "carbonIntensity": null}')
    api.serve("/v3/carbon-intensity/forecast?zone=DE", body=b"<html>maintenance</html>")
    provider = electricity_maps(api)
    with caplog.at_level(logging.WARNING, logger="mape.monitor.carbon.http"):
        assert provider.current(NOW) is None
        assert provider.forecast(NOW, NOW + timedelta(hours=1)) == []
    assert all("unexpected answer" in r.getMessage() for r in caplog.records)
    assert api.count("/v3/carbon-intensity/latest?zone=DE") == 1


def test_answers_are_cached_for_the_ttl_so_a_tick_over_100_models_makes_one_request(api: RecordedApi):
    api.serve("/v3/carbon-intensity/latest?zone=DE", "electricitymaps_latest.json")
    api.serve("/v3/carbon-intensity/forecast?zone=DE", "electricitymaps_forecast.json")
    clock = FakeClock(NOW)
    provider = electricity_maps(api, cache_ttl=timedelta(minutes=5), clock=clock)
    for _ in range(100):
        assert provider.current(NOW).g_per_kwh == 302.0
        assert len(provider.forecast(NOW, NOW + timedelta(hours=12))) == 12
    assert api.count("/v3/carbon-intensity/latest?zone=DE") == 1
    assert api.count("/v3/carbon-intensity/forecast?zone=DE") == 1
    clock.at += timedelta(minutes=4, seconds=59)
    provider.current(NOW)
    assert api.count("/v3/carbon-intensity/latest?zone=DE") == 1
    clock.at += timedelta(seconds=1)
    provider.current(NOW)
    assert api.count("/v3/carbon-intensity/latest?zone=DE") == 2


def test_a_failure_is_cached_too_so_a_down_api_costs_one_timeout_per_ttl(api: RecordedApi):
    api.serve("/v3/carbon-intensity/latest?zone=DE", status=502)
    clock = FakeClock(NOW)
    provider = electricity_maps(api, clock=clock)
    provider._fetcher.retry_delay = 0.01
    for _ in range(10):
        assert provider.current(NOW) is None
    assert api.count("/v3/carbon-intensity/latest?zone=DE") == 2  # one attempt and its retry
    api.serve("/v3/carbon-intensity/latest?zone=DE", "electricitymaps_latest.json")
    clock.at += timedelta(minutes=5)
    assert provider.current(NOW).g_per_kwh == 302.0


def test_a_zero_ttl_asks_every_time(api: RecordedApi):
    api.serve("/v3/carbon-intensity/latest?zone=DE", "electricitymaps_latest.json")
    provider = electricity_maps(api, cache_ttl=timedelta(0))
    provider.current(NOW)
    provider.current(NOW)
    assert api.count("/v3/carbon-intensity/latest?zone=DE") == 2


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"token": ""}, "token"),
    ({"zone": ""}, "zone"),
    ({"timeout": 0}, "timeout"),
    ({"cache_ttl": timedelta(seconds=-1)}, "cache_ttl"),
])
def test_bad_parameters_are_refused_at_construction(kwargs: dict[str, object], name: str):
    arguments = {"token": TOKEN, "zone": "DE", **kwargs}
    with pytest.raises(InvalidParameterError, match=f"The '{name}' parameter of ElectricityMapsProvider"):
        ElectricityMapsProvider(**arguments)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- GB Carbon Intensity API


def test_uk_national_current_prefers_the_actual_value(api: RecordedApi):
    api.serve("/intensity", "uk_intensity.json")
    point = UKCarbonIntensityProvider(base_url=api.url, timeout=2.0).current(NOW)
    assert point is not None
    assert (point.time, point.g_per_kwh, point.source) == (datetime(2026, 3, 10, 12, tzinfo=timezone.utc), 179.0,
                                                          "uk:national")
    assert "auth-token" not in api.requests[0][1]


def test_uk_national_forecast_asks_from_the_half_hour_and_cuts_to_the_window(api: RecordedApi):
    api.serve("/intensity/2026-03-10T12:00Z/fw48h", "uk_intensity_fw48h.json")
    provider = UKCarbonIntensityProvider(base_url=api.url + "/", timeout=2.0)
    points = provider.forecast(NOW, NOW + timedelta(hours=3))
    assert [p.time.strftime("%H:%M") for p in points] == ["12:00", "12:30", "13:00", "13:30", "14:00", "14:30",
                                                            "15:00"]  # 15:00 is in force until 15:10
    assert [p.g_per_kwh for p in points] == [179.0, 138.0, 126.0, 117.0, 114.0, 117.0, 126.0]  # actual, then forecasts
    later = provider.forecast(NOW + timedelta(minutes=15), NOW + timedelta(hours=12))  # same half hour: same URL
    assert len(later) == 25  # 12:00 (in force at 12:25) to 00:00 (in force until 00:25)
    assert api.count("/intensity/2026-03-10T12:00Z/fw48h") == 1


def test_uk_regional_current_and_forecast(api: RecordedApi):
    api.serve("/regional/regionid/13", "uk_regional_regionid_13.json")
    api.serve("/regional/intensity/2026-03-10T12:00Z/fw48h/regionid/13", "uk_regional_fw48h_regionid_13.json")
    provider = UKCarbonIntensityProvider(13, api.url, timeout=2.0)
    now = provider.current(NOW)
    assert (now.g_per_kwh, now.source) == (164.0, "uk:region-13")
    points = provider.forecast(NOW, NOW + timedelta(hours=48))
    assert len(points) == 96
    assert points[0].time == datetime(2026, 3, 10, 12, tzinfo=timezone.utc)
    assert min(p.g_per_kwh for p in points) == 84.0
    assert all(p.source == "uk:region-13" for p in points)


def test_uk_provider_failures_are_absent(api: RecordedApi):
    api.serve("/intensity", status=500)
    provider = UKCarbonIntensityProvider(base_url=api.url, timeout=2.0)
    provider._fetcher.retry_delay = 0.01
    assert provider.current(NOW) is None
    assert provider.forecast(NOW, NOW + timedelta(hours=1)) == []  # no route: a 404, not retried
    assert api.count("/intensity") == 2
    assert api.count("/intensity/2026-03-10T12:00Z/fw48h") == 1


def test_uk_region_must_be_a_positive_int():
    with pytest.raises(InvalidParameterError, match="The 'region' parameter of UKCarbonIntensityProvider"):
        UKCarbonIntensityProvider(0)


def test_the_recorded_responses_are_json_of_the_documented_shapes():
    latest = json.loads((RESPONSES / "electricitymaps_latest.json").read_text())
    assert {"zone", "carbonIntensity", "datetime"} <= latest.keys()
    regional = json.loads((RESPONSES / "uk_regional_fw48h_regionid_13.json").read_text())
    assert isinstance(regional["data"], dict) and {"regionid", "shortname", "data"} <= regional["data"].keys()
