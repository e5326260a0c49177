"""The controller's own metrics, for Prometheus to scrape: ticks, their duration and errors, decisions, actions, freshness.

Who calls it: the controller process (``mape run``) creates one
:class:`ControllerMetrics`, calls :meth:`ControllerMetrics.observe_tick`
after each tick, :meth:`ControllerMetrics.refresh_from_knowledge` with an
open session for the gauges read from the knowledge base, and
:meth:`ControllerMetrics.set_policies` after loading policies; it serves
them with :meth:`ControllerMetrics.serve` on ``127.0.0.1:9464`` by default.

Nothing is sent anywhere: the metrics live in a registry of their own (never
``prometheus_client``'s global one) and are only served to whoever scrapes
the loopback address, unless the operator chooses another address.

Families (a report of a repeated tick counts as a tick, its decisions are
not counted twice):

``mape_ticks_total``
    Ticks run by this process.
``mape_tick_duration_seconds``
    Histogram of tick durations.
``mape_tick_errors_total{stage}``
    Stage failures listed in tick reports, by stage (``monitor``,
    ``analyze``, ``verify``, ``plan``, ``dispatch``, ``action``, ``notify``;
    ``other`` for anything else). A monitor error is one sensor of one model.
``mape_decisions_total{status,action}``
    Decisions made in ticks of this process, by status and action type.
``mape_actions{state}``
    Action runs in each state now (every state is present, 0 if none).
``mape_signal_age_seconds{model,root}``
    Seconds from a model's newest observation of a context root (``drift``,
    ``serving``, ...) to the last refresh: how fresh the signals the policies
    read are. A root with no observation within the lookback (a day by
    default) has no series.
``mape_policies_loaded``, ``mape_policy_errors``
    Policies in force, and policy files refused at the last load.

Example alerts: ``increase(mape_ticks_total[15m]) == 0`` (the loop
stalled), ``mape_signal_age_seconds{root="serving"} > 900`` (serving
metrics stopped arriving).
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from socketserver import ThreadingMixIn
from types import TracebackType
from typing import Any, Protocol, Self
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlmodel import Session

from knowledge import queries
from knowledge.tables import ActionState
from mape._util.timeutil import ensure_utc

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "STAGES", "ControllerMetrics", "MetricsServer", "error_stage"]

#: Where :meth:`ControllerMetrics.serve` listens unless told otherwise (9464: the OpenTelemetry Prometheus exporter's).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9464
#: The ``stage`` label values of ``mape_tick_errors_total``: the prefixes of the controller's tick errors.
STAGES: tuple[str, ...] = ("monitor", "analyze", "verify", "canary", "plan", "dispatch", "action", "notify",
                           "other")
#: Tick durations in seconds: a tick over a small fleet takes a fraction of a second, a training one many minutes.
TICK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
#: Decision ids remembered so that a repeated tick's report does not count them again.
_REMEMBERED_DECISIONS = 100_000


class _Decision(Protocol):
    id: int
    status: str
    action: str


class TickReportLike(Protocol):
    """What :meth:`ControllerMetrics.observe_tick` reads of a :class:`mape.controller.TickReport`."""

    @property
    def errors(self) -> Sequence[str]: ...

    @property
    def decisions(self) -> Sequence[_Decision]: ...


def error_stage(error: str) -> str:
    """The stage of a tick error, from its prefix (``"plan: ..."``, ``"action run 7: ..."``).

    >>> error_stage("monitor: model credit: drift failed"), error_stage("action run 7: boom"), error_stage("?")
    ('monitor', 'action', 'other')
    """
    head = error.split(":", 1)[0].strip()
    stage = "action" if head.startswith("action run") else head
    return stage if stage in STAGES else "other"


@dataclass(frozen=True)
class _Snapshot:
    """The gauges read from the knowledge base at the last refresh (swapped whole, so a scrape sees one refresh)."""

    actions: tuple[tuple[str, int], ...] = tuple((state.value, 0) for state in ActionState)
    signal_ages: tuple[tuple[str, str, float], ...] = ()


class _KnowledgeCollector(Collector):
    def __init__(self, snapshot: Callable[[], _Snapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterable[Metric]:
        return self._families(_Snapshot())

    def collect(self) -> Iterable[Metric]:
        return self._families(self._snapshot())

    @staticmethod
    def _families(snapshot: _Snapshot) -> Iterator[Metric]:
        actions = GaugeMetricFamily("mape_actions", "Action runs in each state now.", labels=["state"])
        for state, count in snapshot.actions:
            actions.add_metric([state], count)
        yield actions
        ages = GaugeMetricFamily("mape_signal_age_seconds",
                                 "Seconds from a model's newest observation of a context root to the last refresh.",
                                 labels=["model", "root"])
        for model, root, age in snapshot.signal_ages:
            ages.add_metric([model, root], age)
        yield ages


class ControllerMetrics:
    """The controller's metrics, in a registry of their own.

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> metrics = ControllerMetrics()
    >>> metrics.observe_tick(NS(errors=["plan: KeyError: 'x'"],
    ...                         decisions=[NS(id=1, status="proposed", action="retrain")]), duration=0.4)
    >>> metrics.value("mape_ticks_total"), metrics.value("mape_tick_errors_total", stage="plan")
    (1.0, 1.0)
    >>> metrics.value("mape_decisions_total", status="proposed", action="retrain")
    1.0
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._ticks = Counter("mape_ticks", "Ticks run by this controller process.", registry=self.registry)
        self._duration = Histogram("mape_tick_duration_seconds", "Duration of a tick, from begin to finish.",
                                   buckets=TICK_BUCKETS, registry=self.registry)
        self._errors = Counter("mape_tick_errors", "Stage failures listed in tick reports, by stage.", ["stage"],
                               registry=self.registry)
        for stage in STAGES:
            self._errors.labels(stage=stage)
        self._decisions = Counter("mape_decisions", "Decisions made in ticks of this process, by status and action.",
                                  ["status", "action"], registry=self.registry)
        self._policies_loaded = Gauge("mape_policies_loaded", "Policies in force.", registry=self.registry)
        self._policy_errors = Gauge("mape_policy_errors", "Policy files refused at the last load.",
                                    registry=self.registry)
        self._snapshot = _Snapshot()
        self.registry.register(_KnowledgeCollector(lambda: self._snapshot))
        self._counted: dict[int, None] = {}  # decision ids already counted, oldest first
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ updates

    def observe_tick(self, report: TickReportLike, duration: float) -> None:
        """Count one tick: its duration (seconds), its errors by stage, its decisions not counted before."""
        self._ticks.inc()
        self._duration.observe(max(float(duration), 0.0))
        for error in report.errors:
            self._errors.labels(stage=error_stage(str(error))).inc()
        with self._lock:
            for decision in report.decisions:
                if decision.id in self._counted:
                    continue
                self._counted[decision.id] = None
                self._decisions.labels(status=str(decision.status), action=str(decision.action)).inc()
            while len(self._counted) > _REMEMBERED_DECISIONS:
                del self._counted[next(iter(self._counted))]

    def set_policies(self, loaded: int, errors: int) -> None:
        """The policies in force and the files refused at the last load (``len(controller.policies)``, ``len(controller.policy_errors)``)."""
        self._policies_loaded.set(loaded)
        self._policy_errors.set(errors)

    def refresh_from_knowledge(self, session: Session, at: datetime, *,
                               lookback: timedelta = timedelta(days=1)) -> None:
        """Read ``mape_actions`` and ``mape_signal_age_seconds`` from the knowledge base, as of ``at`` (two queries).

        Signal ages are ``at`` minus the newest observation at or before
        ``at``; roots with nothing newer than ``at - lookback`` have no series.
        """
        at = ensure_utc(at)
        counts = queries.action_run_counts(session)
        actions = {state.value: 0 for state in ActionState} | counts
        newest = queries.newest_observation_by_root(session, since=at - lookback, until=at)
        ages = tuple(sorted((model, root, max((at - time).total_seconds(), 0.0))
                            for (model, root), time in newest.items()))
        self._snapshot = _Snapshot(actions=tuple(sorted(actions.items())), signal_ages=ages)

    # ------------------------------------------------------------------ reading

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format, as a scrape gets them."""
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))

    def value(self, name: str, **labels: str) -> float | None:
        """The current value of one sample (``mape_ticks_total``, ``mape_actions`` with ``state=...``); None if absent."""
        return self.registry.get_sample_value(name, labels)

    def serve(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> MetricsServer:
        """Serve ``/metrics`` on ``host:port`` in a daemon thread until the returned server is closed.

        Port 0 picks a free port (:attr:`MetricsServer.port`). Raises
        ``OSError`` when the address cannot be bound.
        """
        return MetricsServer(self.registry, host, port)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host up with socket.getfqdn(), which can stall without DNS
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


class MetricsServer:
    """``/metrics`` of a registry, served by a thread of its own; ``close()`` (or leaving a ``with``) stops it.

    Other paths answer 404.
    """

    def __init__(self, registry: CollectorRegistry, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
        metrics_app = make_wsgi_app(registry)

        def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            if environ.get("PATH_INFO", "/") != "/metrics":
                start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
                return [b"Not found; the metrics are at /metrics\n"]
            return metrics_app(environ, start_response)

        server_class = type("_Server", (_ThreadingServer,),
                            {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
        self._server = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"mape-metrics-{self.port}", daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port; closing twice is harmless."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MetricsServer(url={self.url!r})"
