"""Live grid carbon intensity from two public APIs: Electricity Maps (v3) and the GB Carbon Intensity API.

Who calls it: :func:`mape.monitor.carbon.provider_from_config` for
``carbon.provider: electricitymaps`` and ``uk``; the Monitor stage then asks
every tick through :class:`mape.monitor.carbon.sensor.CarbonSensor`.

Both providers follow the same rules (:class:`_CachedFetcher`):

* one request per URL per ``cache_ttl`` (default 5 minutes): a tick over 100
  models makes one request, not 100; a failure is remembered for the same
  time, so an API that is down costs one timeout per ``cache_ttl``, not one
  per model;
* a ``timeout`` (default 5 s) to connect and again to read, and one retry
  after a connection error, a timeout, a 429 or a 5xx (not after other 4xx
  answers such as a refused token);
* a failure, or an answer of an unexpected shape, is one log line and an
  absent value (``current`` is ``None``, ``forecast`` is ``[]``); neither
  method raises.

They answer for the present: ``current(at)`` is the API's latest value
whatever ``at`` is, and ``forecast(start, end)`` is the API's current
forecast cut to the window. The recorded responses of
``tests/monitor/carbon_responses/`` show the JSON shapes parsed here.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time as time_module
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from mape._util.timeutil import Clock, ensure_utc, utcnow
from mape.errors import InvalidParameterError
from mape.monitor.carbon.provider import IntensityPoint, steps_between

__all__ = ["ElectricityMapsProvider", "UKCarbonIntensityProvider"]

log = logging.getLogger(__name__)

T = TypeVar("T")
_RETRIED_STATUS = frozenset({429, 500, 502, 503, 504})


class _CachedFetcher:
    """GET JSON with a timeout, one retry and a TTL cache of the parsed answer (failures included)."""

    def __init__(self, name: str, *, headers: dict[str, str], timeout: float, cache_ttl: timedelta, clock: Clock,
                 retry_delay: float = 0.5) -> None:
        self.name = name
        self.headers = {"Accept": "application/json", "User-Agent": "mape-carbon", **headers}
        self.timeout = timeout
        self.cache_ttl = cache_ttl
        self.clock = clock
        self.retry_delay = retry_delay
        self._cache: dict[str, tuple[datetime, Any]] = {}
        self._lock = threading.Lock()
        self._opener = urllib.request.build_opener()

    def get(self, url: str, parse: Callable[[Any], T], what: str) -> T | None:
        """``parse`` of the JSON at ``url``; ``None`` (logged once per fetch) when it cannot be had."""
        with self._lock:
            now = self.clock()
            cached = self._cache.get(url)
            if cached is not None and now < cached[0]:
                return cached[1]
            value = self._fetch(url, parse, what)
            if self.cache_ttl > timedelta(0):
                self._cache[url] = (now + self.cache_ttl, value)
            return value

    def _fetch(self, url: str, parse: Callable[[Any], T], what: str) -> T | None:
        problem = ""
        for attempt in (1, 2):
            try:
                request = urllib.request.Request(url, headers=self.headers)
                with self._opener.open(request, timeout=self.timeout) as response:
                    body = response.read()
            except urllib.error.HTTPError as exc:
                problem = f"HTTP {exc.code} {exc.reason}"
                if exc.code not in _RETRIED_STATUS:
                    break
            except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets, truncated bodies
                reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                problem = f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
            else:
                try:
                    return parse(json.loads(body))
                except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
                    problem = f"unexpected answer ({type(exc).__name__}: {exc})"
                    break
            if attempt == 1:
                time_module.sleep(self.retry_delay)
        log.warning("%s has no %s: GET %s failed: %s", self.name, what, url, problem)
        return None


def _check(owner: str, *, timeout: float, cache_ttl: timedelta) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 120:
        raise InvalidParameterError.for_parameter("timeout", owner, "a float in (0, 120] (seconds)", timeout)
    if not isinstance(cache_ttl, timedelta) or cache_ttl < timedelta(0):
        raise InvalidParameterError.for_parameter("cache_ttl", owner, "a timedelta of at least 0", cache_ttl)


def _time(text: str) -> datetime:
    return ensure_utc(datetime.fromisoformat(text))


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"intensity {value!r} is not a non-negative number")
    return float(value)


class ElectricityMapsProvider:
    """Carbon intensity of an Electricity Maps zone (API v3), now and forecast.

    Requests ``GET {base_url}/v3/carbon-intensity/latest?zone=Z`` and
    ``GET {base_url}/v3/carbon-intensity/forecast?zone=Z`` with the token in
    the ``auth-token`` header. Answers look like
    ``{"zone": "DE", "carbonIntensity": 302, "datetime": "2026-03-10T12:00:00.000Z", ...}`` and
    ``{"zone": "DE", "forecast": [{"carbonIntensity": 226, "datetime": "..."}, ...], ...}``.
    The forecast endpoint needs a plan that includes it; without one, the
    forecast is ``[]`` and only ``carbon.intensity`` is reported.

    Parameters
    ----------
    token : str
        The API token (read from the environment by the caller; never logged).
    zone : str
        Zone key, e.g. ``"DE"``, ``"FR"``, ``"US-CAL-CISO"``.
    base_url : str
        The API's address.
    timeout : float
        Seconds to connect, and again to read an answer.
    cache_ttl : timedelta
        How long an answer (or a failure) is reused.
    clock : callable
        The wall clock of the cache.
    """

    def __init__(self, token: str, zone: str, base_url: str = "https://api.electricitymap.org", *,
                 timeout: float = 5.0, cache_ttl: timedelta = timedelta(minutes=5), clock: Clock = utcnow) -> None:
        if not isinstance(token, str) or not token.strip():
            raise InvalidParameterError("The 'token' parameter of ElectricityMapsProvider must be a non-empty str.")
        if not isinstance(zone, str) or not zone.strip():
            raise InvalidParameterError.for_parameter("zone", "ElectricityMapsProvider", "a non-empty str", zone)
        _check("ElectricityMapsProvider", timeout=timeout, cache_ttl=cache_ttl)
        self.zone = zone
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.cache_ttl = cache_ttl
        self.source = f"electricitymaps:{zone}"
        self._fetcher = _CachedFetcher(f"Electricity Maps zone {zone}", headers={"auth-token": token},
                                       timeout=timeout, cache_ttl=cache_ttl, clock=clock)

    def __repr__(self) -> str:
        return f"ElectricityMapsProvider(token=<hidden>, zone={self.zone!r}, base_url={self.base_url!r})"

    def _url(self, kind: str) -> str:
        return f"{self.base_url}/v3/carbon-intensity/{kind}?{urllib.parse.urlencode({'zone': self.zone})}"

    def current(self, at: datetime) -> IntensityPoint | None:
        """The zone's latest intensity (``at`` is not sent: the API answers for the present)."""
        return self._fetcher.get(self._url("latest"), self._parse_latest, "current carbon intensity")

    def forecast(self, start: datetime, end: datetime) -> list[IntensityPoint]:
        """The zone's current forecast, cut to the steps in force over ``[start, end)``."""
        points = self._fetcher.get(self._url("forecast"), self._parse_forecast, "carbon intensity forecast")
        return steps_between(points or [], ensure_utc(start), ensure_utc(end))

    def _parse_latest(self, body: dict[str, Any]) -> IntensityPoint:
        return IntensityPoint(_time(body["datetime"]), _number(body["carbonIntensity"]), self.source)

    def _parse_forecast(self, body: dict[str, Any]) -> list[IntensityPoint]:
        points = [IntensityPoint(_time(item["datetime"]), _number(item["carbonIntensity"]), self.source)
                  for item in body["forecast"] if item.get("carbonIntensity") is not None]
        return sorted(points, key=lambda p: p.time)


class UKCarbonIntensityProvider:
    """Carbon intensity of Great Britain from the Carbon Intensity API (NESO), national or one region.

    National: ``GET {base_url}/intensity`` (the current half hour:
    ``{"data": [{"from": "2026-03-10T12:00Z", "to": "...", "intensity": {"forecast": 180, "actual": 175,
    "index": "moderate"}}]}``; the actual value when published, else the forecast) and
    ``GET {base_url}/intensity/{from}/fw48h`` (48 hours of half hours, same entries).
    Regional: ``GET {base_url}/regional/regionid/{id}`` (``{"data": [{"regionid": 13, "shortname": "London",
    "data": [{"from": ..., "intensity": {"forecast": 180, "index": ...}, "generationmix": [...]}]}]}``) and
    ``GET {base_url}/regional/intensity/{from}/fw48h/regionid/{id}`` (``{"data": {"regionid": 13, ...,
    "data": [...]}}``); regional values are forecasts only. ``{from}`` is the
    half hour at or before the window's start, so one answer serves a
    whole half hour of ticks. No token is needed.

    Parameters
    ----------
    region : int, optional
        Region id (1 North Scotland ... 13 London, 14 South East England,
        15 England, 16 Scotland, 17 Wales); ``None`` for Great Britain.
    base_url : str
        The API's address.
    timeout, cache_ttl, clock
        As for :class:`ElectricityMapsProvider`.
    """

    def __init__(self, region: int | None = None, base_url: str = "https://api.carbonintensity.org.uk", *,
                 timeout: float = 5.0, cache_ttl: timedelta = timedelta(minutes=5), clock: Clock = utcnow) -> None:
        if region is not None and (isinstance(region, bool) or not isinstance(region, int) or region < 1):
            raise InvalidParameterError.for_parameter("region", "UKCarbonIntensityProvider",
                                                      "a region id (an int of at least 1) or None", region)
        _check("UKCarbonIntensityProvider", timeout=timeout, cache_ttl=cache_ttl)
        self.region = region
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.cache_ttl = cache_ttl
        self.source = "uk:national" if region is None else f"uk:region-{region}"
        name = "GB Carbon Intensity API" + ("" if region is None else f" region {region}")
        self._fetcher = _CachedFetcher(name, headers={}, timeout=timeout, cache_ttl=cache_ttl, clock=clock)

    def __repr__(self) -> str:
        return f"UKCarbonIntensityProvider(region={self.region!r}, base_url={self.base_url!r})"

    def current(self, at: datetime) -> IntensityPoint | None:
        """The current half hour's intensity (``at`` is not sent: the API answers for the present)."""
        if self.region is None:
            return self._fetcher.get(f"{self.base_url}/intensity", self._parse_current, "current carbon intensity")
        return self._fetcher.get(f"{self.base_url}/regional/regionid/{self.region}", self._parse_regional_current,
                                 "current carbon intensity")

    def forecast(self, start: datetime, end: datetime) -> list[IntensityPoint]:
        """The 48-hour forecast from the half hour of ``start``, cut to ``[start, end)``."""
        start, end = ensure_utc(start), ensure_utc(end)
        half_hour = start.replace(minute=start.minute - start.minute % 30, second=0, microsecond=0)
        stamp = half_hour.strftime("%Y-%m-%dT%H:%MZ")
        if self.region is None:
            points = self._fetcher.get(f"{self.base_url}/intensity/{stamp}/fw48h", self._parse_periods,
                                       "carbon intensity forecast")
        else:
            points = self._fetcher.get(f"{self.base_url}/regional/intensity/{stamp}/fw48h/regionid/{self.region}",
                                       self._parse_regional_forecast, "carbon intensity forecast")
        return steps_between(points or [], start, end)

    def _point(self, period: dict[str, Any]) -> IntensityPoint:
        intensity = period["intensity"]
        value = intensity.get("actual")
        return IntensityPoint(_time(period["from"]), _number(value if value is not None else intensity["forecast"]),
                              self.source)

    def _parse_current(self, body: dict[str, Any]) -> IntensityPoint:
        return self._point(body["data"][0])

    def _parse_periods(self, body: dict[str, Any]) -> list[IntensityPoint]:
        periods = body["data"]
        return sorted((self._point(p) for p in periods if _has_value(p)), key=lambda p: p.time)

    def _parse_regional_current(self, body: dict[str, Any]) -> IntensityPoint:
        return self._point(body["data"][0]["data"][0])

    def _parse_regional_forecast(self, body: dict[str, Any]) -> list[IntensityPoint]:
        region = body["data"]
        region = region[0] if isinstance(region, list) else region  # the documented shape is an object
        return self._parse_periods(region)


def _has_value(period: dict[str, Any]) -> bool:
    intensity = period.get("intensity") or {}
    return intensity.get("actual") is not None or intensity.get("forecast") is not None
