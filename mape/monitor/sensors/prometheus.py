"""Metrics read from a Prometheus server with PromQL instant queries: serving latency, request rates, error rates.

Who calls it: the Monitor stage, every tick, for models whose configuration
has a ``prometheus`` section (:class:`mape.config.PrometheusConfig`);
:func:`prometheus_observations` turns a report into the observations that
policies read, e.g. ``serving.latency_p95_ms`` from::

    histogram_quantile(0.95, sum by (le) (
        rate(mape_model_server_request_duration_seconds_bucket{model="{model}"}[5m]))) * 1000

Each configured query is sent to ``GET <url>/api/v1/query`` with ``time`` set
to the tick's logical time, after ``{model}`` is replaced by the model's name
escaped for a double-quoted PromQL string (write ``{model="{model}"}``, not
single quotes or a regex matcher: a name with a ``.`` is a regex). The
model servers' own series carry no ``model`` label: give it to them in the
scrape configuration (``static_configs: [{targets: [...], labels: {model:
credit}}]``, or relabelling in service discovery).

**A query gives one number or nothing.** A scalar gives its value, a vector
with exactly one series gives that series' value. Nothing is written, and
the metric is absent from the policy context, when:

- the vector is empty (no such series: the model serves no traffic yet, or
  the label does not match); no error, this is normal;
- the value is NaN or infinite (``histogram_quantile`` over no requests, a
  division by zero); no error either;
- the vector has more than one series: an error naming the query and the
  count, since picking one silently would be wrong (aggregate it with
  ``sum``/``max``);
- the result is a range vector or a string, or Prometheus refuses the query
  (a syntax error: Prometheus' own message is in the error), or answers an
  HTTP error, or cannot be reached (connection refused, timeout): an error
  per query.

The sensor never raises for Prometheus' sake: errors are strings in
:attr:`PrometheusReport.errors`, which the Monitor lists in the tick report.
A Prometheus that cannot be reached is asked once per tick: the other
queries, and the other models of the same tick, get the same error without
waiting for another timeout. A query that starts failing is logged once (a
warning), and once more when it works again.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Self

from knowledge.tables import Observation
from mape._util.timeutil import ensure_utc
from mape.config import METRIC_ROOTS, PrometheusConfig
from mape.errors import InvalidParameterError

__all__ = ["PrometheusReport", "PrometheusSensor", "label_value", "prometheus_observations"]

logger = logging.getLogger(__name__)

#: What a Prometheus answer's error body holds at most, in an error message.
_MAX_BODY_SHOWN = 300


@dataclass(frozen=True)
class PrometheusReport:
    """The values of one model's queries at one moment.

    Attributes
    ----------
    model : str
        The model whose name replaced ``{model}``.
    values : mapping of str to float or None
        Every configured metric name; ``None`` when the query gave no number.
    errors : tuple of str
        One sentence per query that failed (absent values without an error
        are empty results, NaN or infinite values).
    """

    model: str
    values: Mapping[str, float | None] = field(default_factory=dict)
    errors: tuple[str, ...] = ()

    def __str__(self) -> str:
        known = {name: value for name, value in self.values.items() if value is not None}
        text = f"Prometheus for model {self.model}: " + (", ".join(f"{n} {v:g}" for n, v in known.items())
                                                         or "no values")
        return text + (f"; {len(self.errors)} error(s)" if self.errors else "")


class _Unreachable(Exception):
    """Prometheus did not answer at all (connection refused, timeout, DNS): no point asking again this tick."""


class PrometheusSensor:
    """Runs PromQL instant queries against a Prometheus server, each giving one metric of a model.

    Parameters
    ----------
    base_url : str
        The server, ``http://host:port`` (with a path prefix if Prometheus runs
        with ``--web.route-prefix``); the API is under ``/api/v1``.
    queries : mapping of str to str
        Metric name (``<root>.<key>``, the root one of
        :data:`mape.config.METRIC_ROOTS`) to PromQL; ``{model}`` is replaced by
        the model's name, escaped for a double-quoted string.
    timeout : float, default 5.0
        Seconds to connect and, again, to read one answer; also sent to
        Prometheus as the query's evaluation timeout.

    Examples
    --------
    >>> sensor = PrometheusSensor("http://127.0.0.1:9090",
    ...                           {"serving.error_rate": 'sum(rate(errors_total{model="{model}"}[5m]))'})
    >>> sensor.promql("serving.error_rate", 'we"ird')
    'sum(rate(errors_total{model="we\\\\"ird"}[5m]))'
    >>> PrometheusSensor("http://127.0.0.1:9090", {"latency": "up"})  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    mape.errors.InvalidParameterError: The 'queries' parameter of PrometheusSensor must be a non-empty mapping of
    metric names <root>.<key> (root one of drift, performance, fairness, gpu, carbon, serving, quality) to non-empty
    PromQL.
    Got {'latency': 'up'} instead.
    """

    def __init__(self, base_url: str, queries: Mapping[str, str], timeout: float = 5.0) -> None:
        self.base_url = base_url
        self.queries = dict(queries)
        self.timeout = timeout
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")) or " " in base_url:
            raise InvalidParameterError.for_parameter("base_url", "PrometheusSensor", "an http:// or https:// URL",
                                                      base_url)
        if not self.queries or not all(_metric_name_ok(name) and isinstance(q, str) and q.strip()
                                       for name, q in self.queries.items()):
            raise InvalidParameterError.for_parameter(
                "queries", "PrometheusSensor",
                f"a non-empty mapping of metric names <root>.<key> (root one of {', '.join(METRIC_ROOTS)}) to "
                f"non-empty PromQL", self.queries)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 120:
            raise InvalidParameterError.for_parameter("timeout", "PrometheusSensor", "a number of seconds in (0, 120]",
                                                      timeout)
        self._reset()

    def _reset(self) -> None:
        self._endpoint = self.base_url.rstrip("/") + "/api/v1/query"
        self._opener = urllib.request.build_opener()
        self._down: tuple[datetime, str] | None = None  # (tick time, why) of the last unreachable Prometheus
        self._failing: dict[tuple[str, str], str] = {}  # (model, metric) -> the error last logged

    @classmethod
    def from_config(cls, config: PrometheusConfig) -> Self:
        """A sensor for a :class:`mape.config.PrometheusConfig`."""
        return cls(config.url, config.queries, timeout=config.timeout.total_seconds())

    # ------------------------------------------------------------------ reading

    def promql(self, metric: str, model: str) -> str:
        """The query of ``metric`` for ``model``: ``{model}`` replaced by the escaped name."""
        return self.queries[metric].replace("{model}", label_value(model))

    def read(self, model: str, at: datetime) -> PrometheusReport:
        """Every query for ``model``, evaluated at ``at`` (the tick's logical time); never raises for Prometheus.

        Queries run one after the other; once Prometheus cannot be reached,
        the rest of this tick's queries (this model's and the next models')
        fail with the same error at once.
        """
        at = ensure_utc(at)
        values: dict[str, float | None] = {}
        errors: list[str] = []
        for metric in self.queries:
            promql = self.promql(metric, model)
            values[metric] = None
            error: str | None
            if self._down is not None and self._down[0] == at:
                error = self._unreachable(metric, self._down[1])
            else:
                try:
                    values[metric], error = self._instant(metric, promql, at)
                except _Unreachable as exc:
                    self._down = (at, str(exc))
                    error = self._unreachable(metric, str(exc))
            if error is not None:
                errors.append(error)
            self._log_change(model, metric, error)
        if not errors:
            self._down = None
        return PrometheusReport(model=model, values=values, errors=tuple(errors))

    def _unreachable(self, metric: str, why: str) -> str:
        return f"Prometheus at {self.base_url} cannot be reached, so {metric} is unknown: {why}"

    def _instant(self, metric: str, promql: str, at: datetime) -> tuple[float | None, str | None]:
        """(value, error) of one instant query; raises :class:`_Unreachable` when no answer came."""
        parameters = {"query": promql, "time": f"{at.timestamp():.3f}", "timeout": f"{self.timeout:g}s"}
        request = urllib.request.Request(f"{self._endpoint}?{urllib.parse.urlencode(parameters)}",
                                         headers={"Accept": "application/json", "User-Agent": "mape-prometheus"})
        what = f"Prometheus query of {metric} ({promql})"
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            return None, f"{what} failed: {_http_error(exc)}"
        except (urllib.error.URLError, TimeoutError, socket.timeout, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Unreachable(f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__) from None
        except OSError as exc:  # a reset in the middle of reading, a broken proxy
            raise _Unreachable(f"{type(exc).__name__}: {exc}") from None
        try:
            document = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None, f"{what} failed: the answer is not JSON: {_shown_body(body)}"
        return _value_of(document, what)

    def _log_change(self, model: str, metric: str, error: str | None) -> None:
        key = (model, metric)
        if error is None:
            if self._failing.pop(key, None) is not None:
                logger.info("Prometheus query of %s for model %s works again.", metric, model)
            return
        if self._failing.get(key) != error:
            self._failing[key] = error
            logger.warning("%s (model %s).", error.rstrip("."), model)

    def __repr__(self) -> str:
        return f"PrometheusSensor({self.base_url!r}, {self.queries!r}, timeout={self.timeout!r})"


def _metric_name_ok(name: Any) -> bool:
    if not isinstance(name, str):
        return False
    root, dot, key = name.partition(".")
    return bool(dot) and root in METRIC_ROOTS and key.isidentifier() and key.isascii() and key == key.lower()


def label_value(value: str) -> str:
    """``value`` escaped for a double-quoted PromQL string (backslash, double quote, newline).

    >>> print(label_value('a"b\\\\c'))
    a\\"b\\\\c
    """
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _shown_body(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    return repr(text if len(text) <= _MAX_BODY_SHOWN else text[:_MAX_BODY_SHOWN] + "...")


def _http_error(exc: urllib.error.HTTPError) -> str:
    """Prometheus' own ``errorType: error`` of an HTTP error answer, else the status and the start of the body."""
    try:
        body = exc.read()
    except OSError:
        body = b""
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        document = None
    if isinstance(document, dict) and document.get("error"):
        return f"HTTP {exc.code}: {document.get('errorType', 'error')}: {document['error']}"
    return f"HTTP {exc.code} {exc.reason}" + (f": {_shown_body(body)}" if body else "")


def _number(sample: Any) -> float | None:
    """The value of a ``[time, "value"]`` pair; ``None`` for NaN and infinities."""
    value = float(sample[1])
    return value if math.isfinite(value) else None


def _value_of(document: Any, what: str) -> tuple[float | None, str | None]:
    """(value, error) of a successful ``/api/v1/query`` answer.

    >>> _value_of({"status": "success", "data": {"resultType": "scalar", "result": [1.5, "2"]}}, "q")
    (2.0, None)
    >>> _value_of({"status": "success", "data": {"resultType": "vector", "result": []}}, "q")
    (None, None)
    >>> _value_of({"status": "success", "data": {"resultType": "vector", "result": [
    ...     {"metric": {}, "value": [1.5, "NaN"]}]}}, "q")
    (None, None)
    >>> _value_of({"status": "success", "data": {"resultType": "vector", "result": [
    ...     {"metric": {"code": "200"}, "value": [1.5, "3"]}, {"metric": {"code": "500"}, "value": [1.5, "1"]}]}}, "q")
    (None, 'q returned 2 series, not one; aggregate it with sum/max')
    """
    try:
        if document.get("status") != "success":
            return None, f"{what} failed: {document.get('errorType', 'error')}: {document.get('error', document)}"
        data = document["data"]
        kind, result = data["resultType"], data["result"]
        if kind == "scalar":
            return _number(result), None
        if kind == "vector":
            if not result:
                return None, None
            if len(result) > 1:
                return None, f"{what} returned {len(result)} series, not one; aggregate it with sum/max"
            return _number(result[0]["value"]), None
        if kind == "matrix":
            return None, f"{what} returned a range vector; an instant query must give an instant vector or a scalar"
        return None, f"{what} returned a {kind}, not a number"
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        return None, f"{what} failed: the answer has an unexpected shape ({type(exc).__name__}: {exc})"


# ---------------------------------------------------------------------- observation rows


def prometheus_observations(model_id: int, at: datetime, report: PrometheusReport) -> list[Observation]:
    """The observations of one report: sensor ``prometheus``, labels ``{}``, metric as configured; absent values are not written.

    >>> from datetime import timezone
    >>> report = PrometheusReport("credit", {"serving.latency_p95_ms": 41.5, "serving.error_rate": None})
    >>> [(r.sensor, r.metric, r.value) for r in prometheus_observations(
    ...     1, datetime(2026, 1, 5, tzinfo=timezone.utc), report)]
    [('prometheus', 'serving.latency_p95_ms', 41.5)]
    """
    return [Observation(time=at, model_id=model_id, sensor="prometheus", metric=metric, value=float(value), labels={})
            for metric, value in report.values.items() if value is not None]

