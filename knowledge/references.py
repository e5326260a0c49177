"""Drift references in the knowledge base: every version of every model's reference window.

Who calls it: :class:`mape.monitor.reference.ReferenceWindows` reads the
newest reference of each model's production version once a tick and stores
a new one when it is due; ``mape references`` and the dashboard list them.

A reference belongs to the model version that was in production when it was
taken; its ``version`` counts up per model. Reservoir and fixed references
carry their rows (``sample``; a fixed one at most ``size`` of its training
window's, so that a version rolled back to after its log rotated away still
has them), and only the newest ``keep`` of each model version:
:func:`prune_samples` empties the older ones, whose rows (bounds, size,
fingerprint) stay for the record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, update
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from knowledge.tables import ModelVersion, ReferenceWindow, Stage


@dataclass(frozen=True)
class StoredReference:
    """A reference row without its sample: what the monitor keeps between ticks (no session needed)."""

    id: int
    model_id: int
    model_version_id: int
    version: int
    kind: str
    window_start: datetime | None
    window_end: datetime | None
    n_rows: int
    n_seen: int
    fingerprint: str
    taken_at: datetime

    @classmethod
    def of(cls, row: ReferenceWindow) -> StoredReference:
        assert row.id is not None
        return cls(row.id, row.model_id, row.model_version_id, row.version, row.kind, row.window_start,
                   row.window_end, row.n_rows, row.n_seen, row.fingerprint, row.taken_at)


def latest_references_fleet(session: Session, model_ids: Sequence[int]) -> dict[int, StoredReference]:
    """The newest reference of each model's production version, in one query.

    A model whose production version has no reference yet (a new version, or
    no version in production) is absent. A version back in production after a
    rollback finds its own newest reference here, not the one its successor
    took.
    """
    if not model_ids:
        return {}
    newest = (select(ReferenceWindow.model_id, func.max(ReferenceWindow.version).label("version"))
              .join(ModelVersion, col(ModelVersion.id) == col(ReferenceWindow.model_version_id))
              .where(col(ReferenceWindow.model_id).in_(list(model_ids)))
              .where(ModelVersion.stage == Stage.production.value)
              .group_by(col(ReferenceWindow.model_id)).subquery())
    fields = [getattr(ReferenceWindow, name) for name in StoredReference.__dataclass_fields__]
    query = (select(*fields)
             .join(newest, (col(ReferenceWindow.model_id) == newest.c.model_id)
                   & (col(ReferenceWindow.version) == newest.c.version)))
    return {row.model_id: StoredReference(*row) for row in session.exec(query)}


def latest_reference_of_version(session: Session, model_version_id: int) -> StoredReference | None:
    """The newest reference taken while this model version was in production, or None (a version back in
    production after a rollback finds its own reference here)."""
    fields = [getattr(ReferenceWindow, name) for name in StoredReference.__dataclass_fields__]
    row = session.exec(select(*fields).where(ReferenceWindow.model_version_id == model_version_id)
                       .order_by(col(ReferenceWindow.version).desc()).limit(1)).first()
    return None if row is None else StoredReference(*row)


def reference_sample(session: Session, reference_id: int) -> bytes | None:
    """The stored rows of one reference (Parquet bytes), or None when it has none (any longer)."""
    return session.exec(select(ReferenceWindow.sample).where(ReferenceWindow.id == reference_id)).first()


def add_reference(session: Session, *, model_id: int, model_version_id: int, kind: str, taken_at: datetime,
                  window_start: datetime | None, window_end: datetime | None, n_rows: int, fingerprint: str,
                  reason: str, n_seen: int = 0, sample: bytes | None = None) -> StoredReference:
    """Store the next version of a model's reference (flushed, so it has its id)."""
    last = session.exec(select(func.max(ReferenceWindow.version)).where(ReferenceWindow.model_id == model_id)).one()
    row = ReferenceWindow(model_id=model_id, model_version_id=model_version_id, version=(last or 0) + 1, kind=kind,
                          window_start=window_start, window_end=window_end, n_rows=n_rows, n_seen=n_seen,
                          fingerprint=fingerprint, reason=reason[:300], sample=sample, taken_at=taken_at)
    session.add(row)
    session.flush()
    return StoredReference.of(row)


def prune_samples(session: Session, model_version_id: int, *, keep: int) -> int:
    """Empty the samples of all but the newest ``keep`` references of a model version; returns how many."""
    kept = (select(ReferenceWindow.id).where(ReferenceWindow.model_version_id == model_version_id)
            .where(col(ReferenceWindow.sample).is_not(None))
            .order_by(col(ReferenceWindow.version).desc()).limit(keep))
    result = session.execute(
        update(ReferenceWindow)
        .where(col(ReferenceWindow.model_version_id) == model_version_id)
        .where(col(ReferenceWindow.sample).is_not(None))
        .where(col(ReferenceWindow.id).not_in(kept))
        .values(sample=None)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def references(session: Session, model_id: int, *, limit: int = 100) -> list[ReferenceWindow]:
    """A model's references, newest first, without their samples."""
    query = (select(ReferenceWindow).where(ReferenceWindow.model_id == model_id)
             .order_by(col(ReferenceWindow.version).desc()).limit(limit)
             .options(defer(ReferenceWindow.sample)))  # type: ignore[arg-type]
    return list(session.exec(query))


def references_of_version(session: Session, model_version_id: int) -> list[ReferenceWindow]:
    """A model version's references, newest first, without their samples."""
    query = (select(ReferenceWindow).where(ReferenceWindow.model_version_id == model_version_id)
             .order_by(col(ReferenceWindow.version).desc())
             .options(defer(ReferenceWindow.sample)))  # type: ignore[arg-type]
    return list(session.exec(query))
