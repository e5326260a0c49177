"""The controller process's ``/metrics``: ticks, decisions, actions and signal freshness, read from the knowledge base.

Who calls it: ``mape run`` (through :func:`flows.serve.serve`). Prefect's
runner runs each tick flow in a process of its own, so the process that
serves ``/metrics`` learns about ticks the way everything else does: from
the knowledge base. :class:`MetricsLoop` follows the ``tick`` table (each
finished tick's stored report counts once, with its duration), refreshes the
gauges (:meth:`mape.exporter.ControllerMetrics.refresh_from_knowledge`) and
the policy counts every ``interval``, and serves
:class:`mape.exporter.ControllerMetrics` on loopback. Nothing is sent anywhere.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from knowledge import queries
from knowledge.database import session_scope
from mape._util.timeutil import ensure_utc, utcnow
from mape.controller import TickReport
from mape.exporter import ControllerMetrics, MetricsServer

log = logging.getLogger(__name__)

__all__ = ["MetricsLoop"]


class MetricsLoop:
    """Keeps a :class:`ControllerMetrics` current from the knowledge base and serves it.

    Parameters
    ----------
    engine : Engine
        The knowledge base.
    policies : callable
        Returns ``(loaded, refused)``: the policies in force and the files refused.
    interval : timedelta
        How often the knowledge base is read.
    clock : callable
        Now, for the signals' ages.
    """

    def __init__(self, engine: Engine, policies: Callable[[], tuple[int, int]], *,
                 interval: timedelta = timedelta(seconds=15), clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self.clock = clock
        self.policies = policies
        self.interval = interval
        self.metrics = ControllerMetrics()
        self._last_tick: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: MetricsServer | None = None

    def refresh(self) -> int:
        """Count the ticks finished since the last refresh and update the gauges; returns how many ticks were new."""
        with session_scope(self.engine) as session:
            if self._last_tick is None:  # a new process counts from now: earlier ticks were another process's
                self._last_tick = queries.newest_tick_id(session)
            ticks = queries.finished_ticks_after(session, self._last_tick)
            for tick in ticks:
                try:
                    report = TickReport.model_validate(tick.summary)
                except ValueError:  # a tick that crashed before writing its report
                    continue
                started, finished = ensure_utc(tick.started_at), ensure_utc(tick.finished_at)  # type: ignore[arg-type]
                self.metrics.observe_tick(report, max(0.0, (finished - started).total_seconds()))
            if ticks and ticks[-1].id is not None:
                self._last_tick = ticks[-1].id
            self.metrics.refresh_from_knowledge(session, self.clock())
        loaded, refused = self.policies()
        self.metrics.set_policies(loaded, refused)
        return len(ticks)

    def start(self, host: str, port: int) -> MetricsServer:
        """Serve on ``host:port`` and refresh every ``interval`` in a daemon thread until :meth:`stop`."""
        self._server = self.metrics.serve(host, port)

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.refresh()
                except Exception:  # noqa: BLE001 - a failed refresh keeps the last values; the loop goes on
                    log.warning("Refreshing the controller's metrics failed; trying again in %s", self.interval,
                                exc_info=True)
                self._stop.wait(self.interval.total_seconds())

        self._thread = threading.Thread(target=loop, name="mape-metrics", daemon=True)
        self._thread.start()
        log.info("Controller metrics on %s", self._server.url)
        return self._server

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._server is not None:
            self._server.close()
