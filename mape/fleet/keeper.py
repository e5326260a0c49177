"""The lease keeper: renews this controller's model leases and takes free ones, on a timer of its own.

Who calls it: ``mape run`` starts one in its long-lived process
(:meth:`LeaseKeeper.start`), since its ticks run in processes of their own
and a tick can outlast a lease; each tick of a controller with leases on also
runs one round (:meth:`LeaseKeeper.round`) before it looks at the fleet, so a
lone ``mape tick`` works too. :meth:`LeaseKeeper.stop` on a clean shutdown
hands the leases back at once (:func:`knowledge.leases.leave`); a killed
process's leases simply expire.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import select

from knowledge import leases, queries
from knowledge.database import session_scope
from knowledge.tables import ManagedModel
from mape._util.timeutil import Clock, utcnow
from mape.config import Settings
from mape.execute.claims import this_process

log = logging.getLogger(__name__)

__all__ = ["LeaseKeeper"]


class LeaseKeeper:
    """One controller's side of the lease protocol.

    Parameters
    ----------
    engine : Engine
        The knowledge base shared by the controllers.
    settings : Settings
        Its ``controller_id``, ``models`` (the fleet) and ``leases`` (duration, renewal interval).
    clock : callable
        The wall clock (never a tick's logical time).
    """

    def __init__(self, engine: Engine, settings: Settings, *, clock: Clock = utcnow) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.last: leases.LeaseRound | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def controller_id(self) -> str:
        return self.settings.controller_id

    def fleet(self) -> list[int]:
        """The ids of the configured models in the knowledge base."""
        names = [m.name for m in self.settings.models]
        with session_scope(self.engine) as session:
            return sorted(m for m in session.exec(select(ManagedModel.id).where(
                ManagedModel.name.in_(names))).all() if m is not None)  # type: ignore[attr-defined]

    def round(self) -> leases.LeaseRound:
        """Renew, take and release leases once (:func:`knowledge.leases.balance`); logs what changed."""
        with session_scope(self.engine) as session:
            busy = {run.model_id for run in queries.in_flight_actions(session)}
        result = leases.balance(self.engine, self.controller_id, self.fleet(), now=self.clock(),
                                duration=self.settings.leases.duration, process=str(this_process()), busy=busy)
        if result.changed:
            taken = {m: p for m, p in result.acquired.items() if p}
            log.info("Controller %s: leases of %d models (share %d of %d controllers); took %d%s, released %d",
                     self.controller_id, len(result.held), result.share, len(result.members), len(result.acquired),
                     f" ({len(taken)} from stopped controllers: {sorted(set(taken.values()))})" if taken else "",
                     len(result.released))
        self.last = result
        return result

    def owned(self, now: datetime | None = None) -> frozenset[int]:
        """The models whose lease this controller holds now (read from the knowledge base)."""
        with session_scope(self.engine) as session:
            return leases.held(session, self.controller_id, now or self.clock())

    # ------------------------------------------------------------------ the timer

    def start(self) -> None:
        """Run a round now, then every ``leases.renew_every`` in a daemon thread, until :meth:`stop`."""
        self.round()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"lease-keeper-{self.controller_id}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        interval = self.settings.leases.renew_every.total_seconds()
        while not self._stop.wait(interval):
            try:
                self.round()
            except Exception:  # noqa: BLE001 - a failed round is tried again; the leases last until they expire
                log.exception("Controller %s: the lease round failed; trying again in %.0fs", self.controller_id,
                              interval)

    def stop(self, *, leave: bool = True) -> list[int]:
        """Stop the timer; with ``leave``, hand every lease back now so the others take them at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if not leave:
            return []
        released = leases.leave(self.engine, self.controller_id, now=self.clock())
        log.info("Controller %s: handed back the leases of %d models", self.controller_id, len(released))
        return released
