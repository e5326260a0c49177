"""Model leases: which controller acts for which model, when several share a fleet.

Who calls it: the lease keeper of ``mape run`` (:mod:`mape.fleet.keeper`),
every few seconds, and each tick of a controller with leases on
(:class:`mape.controller.Controller`), which then senses, analyzes, plans,
verifies and acts only for the models it holds; the executor fences each
claim of an action run on its model's lease (:func:`holds_clause`), and
``mape leases`` shows them.

The protocol, all in one transaction per round (:func:`balance`):

1. **Membership.** The controller renews its ``controller_member`` row
   (``expires_at`` = now + the lease duration); the members whose rows have
   not expired are the live controllers.
2. **Renewal.** Every lease it holds that has not expired is extended. A lease
   that expired before its holder renewed it is not renewed: it may already
   be another's, and if not it is taken again in step 3, with a new epoch.
3. **Fair share.** ``share = ceil(models / live controllers)``. Below its
   share, a controller takes leases nobody holds or whose holder let them
   expire, each by a compare-and-set ``UPDATE`` (so two controllers never both
   take one), incrementing its ``epoch``; above its share (a controller
   joined), it releases the surplus, models with no action in flight first.

A dead controller stops renewing: its leases expire after the lease
duration, and the next round of any live controller takes them (within the
duration plus one renewal interval: 15 s + 10 s by default). Times are the
processes' wall clocks, which must agree to well under the margin between
duration and renewal interval (NTP does); the logical time of ticks plays no
part.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, delete, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from knowledge import audit
from knowledge.database import session_scope
from knowledge.tables import ControllerMember, ModelLease
from mape._util.timeutil import ensure_utc

__all__ = ["LeaseRound", "balance", "held", "holds_clause", "leases", "leave", "members"]

#: A lease nobody held yet expired at the epoch of the Unix clock.
_NEVER = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass
class LeaseRound:
    """What one round of :func:`balance` found and changed."""

    controller_id: str
    at: datetime
    members: list[str]
    share: int
    held: frozenset[int]
    acquired: dict[int, str] = field(default_factory=dict)  # model id -> its previous holder ('' for none)
    released: list[int] = field(default_factory=list)
    renewed: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.acquired or self.released)

    def as_dict(self) -> dict[str, Any]:
        return {"controller": self.controller_id, "at": self.at.isoformat(), "members": self.members,
                "share": self.share, "held": sorted(self.held), "renewed": self.renewed,
                "acquired": {str(k): v for k, v in sorted(self.acquired.items())}, "released": sorted(self.released)}


def held(session: Session, controller_id: str, now: datetime) -> frozenset[int]:
    """The ids of the models whose lease ``controller_id`` holds at ``now``."""
    rows = session.exec(select(ModelLease.model_id).where(
        ModelLease.holder == controller_id, col(ModelLease.expires_at) > ensure_utc(now)))
    return frozenset(rows.all())


def holds_clause(model_id: Any, controller_id: str, now: datetime) -> ColumnElement[bool]:
    """A SQL condition: the model in the column ``model_id`` is leased to ``controller_id`` at ``now`` (a fence)."""
    return (select(ModelLease.model_id)
            .where(col(ModelLease.model_id) == model_id, ModelLease.holder == controller_id,
                   col(ModelLease.expires_at) > ensure_utc(now))
            .exists())


def members(session: Session, now: datetime) -> list[str]:
    """The live controllers: those whose membership has not expired, by name."""
    return sorted(session.exec(select(ControllerMember.controller_id).where(
        col(ControllerMember.expires_at) > ensure_utc(now))).all())


def leases(session: Session) -> list[ModelLease]:
    """Every lease row, by model id (for ``mape leases`` and the tests)."""
    return list(session.exec(select(ModelLease).order_by(col(ModelLease.model_id))))


def _insert_missing(session: Session, model_ids: Iterable[int]) -> None:
    rows = [{"model_id": m, "holder": "", "epoch": 0, "expires_at": _NEVER} for m in model_ids]
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(ModelLease).values(rows).on_conflict_do_nothing(index_elements=["model_id"]))


def _join(session: Session, controller_id: str, process: str, now: datetime, until: datetime) -> None:
    member = session.get(ControllerMember, controller_id)
    if member is None:
        session.add(ControllerMember(controller_id=controller_id, process=process, joined_at=now, renewed_at=now,
                                     expires_at=until))
    else:
        if ensure_utc(member.expires_at) <= now:  # it had dropped out: a new membership
            member.joined_at = now
        member.process, member.renewed_at, member.expires_at = process, now, until
        session.add(member)
    session.flush()


def balance(engine: Engine, controller_id: str, model_ids: Collection[int], *, now: datetime,
            duration: timedelta, process: str = "", busy: Collection[int] = (), actor: str | None = None,
            ) -> LeaseRound:
    """One round of the protocol for ``controller_id`` over the fleet ``model_ids``; see the module's text.

    Parameters
    ----------
    engine : Engine
        The knowledge base.
    controller_id : str
        The controller this round is for (its leases' holder).
    model_ids : collection of int
        The fleet's models (the configured ones); leases of others are left alone.
    now : datetime
        The wall-clock time (aware UTC).
    duration : timedelta
        How long a taken or renewed lease (and the membership) lasts.
    process : str
        The renewing process, recorded on the membership.
    busy : collection of int
        Models with an action in flight: released last when above the share.
    actor : str, optional
        The audit trail's actor (default: ``controller_id``).

    Returns
    -------
    LeaseRound
        The models held after the round and what changed; a change is audited
        as one ``lease.changed`` event.
    """
    now = ensure_utc(now)
    until = now + duration
    fleet = sorted(set(model_ids))
    with session_scope(engine) as session:
        _join(session, controller_id, process, now, until)
        _insert_missing(session, fleet)
        renewed = session.execute(
            update(ModelLease)
            .where(ModelLease.holder == controller_id, col(ModelLease.expires_at) > now,
                   col(ModelLease.model_id).in_(fleet))
            .values(expires_at=until, renewed_at=now)
            .execution_options(synchronize_session=False)).rowcount or 0
        live = members(session, now)
        share = math.ceil(len(fleet) / max(1, len(live))) if fleet else 0
        mine = set(held(session, controller_id, now)) & set(fleet)
        result = LeaseRound(controller_id=controller_id, at=now, members=live, share=share, held=frozenset(),
                            renewed=int(renewed))
        if len(mine) < share:
            free = session.exec(select(ModelLease.model_id, ModelLease.holder).where(
                col(ModelLease.model_id).in_(fleet),
                or_(ModelLease.holder == "", col(ModelLease.expires_at) <= now)).order_by(col(ModelLease.model_id))).all()
            # start at a place of its own in the list, so controllers that start together contend less
            offset = (sum(map(ord, controller_id)) % len(free)) if free else 0
            for model_id, previous in [*free[offset:], *free[:offset]]:
                if len(mine) >= share:
                    break
                taken = session.execute(
                    update(ModelLease)
                    .where(col(ModelLease.model_id) == model_id,
                           or_(ModelLease.holder == "", col(ModelLease.expires_at) <= now))
                    .values(holder=controller_id, epoch=col(ModelLease.epoch) + 1, acquired_at=now, renewed_at=now,
                            expires_at=until)
                    .execution_options(synchronize_session=False)).rowcount
                if taken == 1:
                    mine.add(model_id)
                    result.acquired[model_id] = previous if previous != controller_id else ""
        elif len(mine) > share:
            surplus = len(mine) - share
            busy_set = set(busy)
            order = sorted(mine, key=lambda m: (m in busy_set, -m))  # idle models first, the newest ids first
            for model_id in order[:surplus]:
                gone = session.execute(
                    update(ModelLease)
                    .where(col(ModelLease.model_id) == model_id, ModelLease.holder == controller_id)
                    .values(holder="", expires_at=now, renewed_at=now)
                    .execution_options(synchronize_session=False)).rowcount
                if gone == 1:
                    mine.discard(model_id)
                    result.released.append(model_id)
        result.held = frozenset(mine)
        if result.changed:
            audit.record(session, actor=actor or controller_id, kind="lease.changed", subject=controller_id,
                         payload={"acquired": {str(k): v for k, v in sorted(result.acquired.items())},
                                  "released": sorted(result.released), "held": len(mine), "share": share,
                                  "members": live}, time=now)
    return result


def leave(engine: Engine, controller_id: str, *, now: datetime, actor: str | None = None) -> list[int]:
    """A clean shutdown: release every lease of ``controller_id`` and end its membership; returns the models released.

    The others take the released models at their next round, without waiting
    for the leases to expire.
    """
    now = ensure_utc(now)
    with session_scope(engine) as session:
        released = sorted(session.exec(select(ModelLease.model_id).where(
            ModelLease.holder == controller_id, col(ModelLease.expires_at) > now)).all())
        session.execute(update(ModelLease).where(ModelLease.holder == controller_id)
                        .values(holder="", expires_at=now, renewed_at=now)
                        .execution_options(synchronize_session=False))
        session.execute(delete(ControllerMember).where(and_(ControllerMember.controller_id == controller_id)))
        if released:
            audit.record(session, actor=actor or controller_id, kind="lease.changed", subject=controller_id,
                         payload={"acquired": {}, "released": released, "held": 0, "left": True}, time=now)
    return released
