"""Each model's drift reference: which rows the drift and quality sensors compare windows with.

Who calls it: the :class:`~mape.monitor.stage.Monitor` asks
:meth:`ReferenceWindows.resolve` for every model once a tick, fits its drift
and quality sensors on the answer whenever its ``key`` changes, and hands
each current window to :meth:`ReferenceWindows.observe` (reservoir references
learn from them). The knowledge base (:mod:`knowledge.references`) holds
every version, so a restarted controller, or one that takes over, finds the
same reference.

Three kinds (``reference`` in a model's configuration,
:class:`~mape.config.ReferenceConfig`):

- ``fixed``: the production version's training window of the inference log.
  Its rows are stored with it (at most ``size``, a uniform sample beyond), and
  they stand in when the log read again holds fewer rows than were taken (a
  rotated log: a version rolled back to days after its training).
- ``rolling``: the ``length`` of log ending ``lag`` before the tick, retaken
  every ``refresh``, counting only rows since the version's promotion; while
  those are fewer than ``drift.min_samples``, the training window stands in.
- ``reservoir``: a uniform sample (algorithm R) of ``size`` rows of all the
  windows the monitor has read since the version went into production,
  seeded with its training window; every ``refresh`` the sample becomes a
  new version, with its rows stored. Windows whose columns differ from the
  sample's are not learned from (the quality sensor reports them as a schema
  change), so a broken pipeline does not become the new normal.

A new production version starts a new reference; a version back in production
(a rollback) takes up its own newest one, and a fixed one of those is never
retaken. A reference with
fewer rows than ``drift.min_samples`` is used for the tick but not stored,
so a log filled in later is picked up at the next tick.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd
from sqlmodel import Session

from knowledge import references as store
from knowledge.references import StoredReference
from knowledge.tables import ModelVersion
from mape._util.timeutil import ensure_utc
from mape.config import ModelConfig
from mape.errors import MapeError

logger = logging.getLogger(__name__)

#: Reads ``[start, end)`` of a model's inference log, every column.
WindowReader = Callable[[ModelConfig, datetime, datetime], pd.DataFrame]


@dataclass
class Reference:
    """A model's reference as this tick's sensors use it.

    Attributes
    ----------
    key : tuple of int, or None
        ``(model version id, reference version)`` of a stored reference: the
        sensors fitted on it are kept while it stays the same. None for a
        reference too small to store, read again next tick.
    version : int or None
        The stored reference's version number (per model).
    kind : str
        ``fixed``, ``rolling`` or ``reservoir``.
    """

    key: tuple[int, int] | None
    version: int | None
    kind: str
    _load: Callable[[], pd.DataFrame] = field(repr=False)
    _frame: pd.DataFrame | None = field(default=None, repr=False)

    def frame(self) -> pd.DataFrame:
        """The reference rows, read (or decoded) on first use."""
        if self._frame is None:
            self._frame = self._load()
        return self._frame


@dataclass
class _Reservoir:
    """A reservoir sample of one production version, and the stored reference it continues from."""

    model_version_id: int
    base_id: int  # the stored reference this sample continues; another newest row in the KB means: reload
    frame: pd.DataFrame
    n_seen: int
    seen_until: datetime
    stored_at: datetime


class ReferenceWindows:
    """Resolves, refreshes and stores the references of a fleet (see the module docstring).

    Parameters
    ----------
    read : callable
        ``read(cfg, start, end)``: the model's inference log in ``[start, end)``.
    """

    def __init__(self, read: WindowReader) -> None:
        self.read = read
        self._newest: dict[int, StoredReference | None] = {}
        self._reservoirs: dict[str, _Reservoir] = {}

    def load(self, session: Session, model_ids: list[int]) -> None:
        """Read the newest stored reference of every model's production version: once a tick, before :meth:`resolve`."""
        newest = store.latest_references_fleet(session, model_ids)
        self._newest = {model_id: newest.get(model_id) for model_id in model_ids}

    def resolve(self, session: Session, cfg: ModelConfig, production: ModelVersion, at: datetime) -> Reference:
        """The reference of ``cfg``'s production version at tick ``at``, storing a new version when one is due."""
        assert production.id is not None
        at = ensure_utc(at)
        newest = self._newest.get(production.model_id)
        if newest is None and production.model_id not in self._newest:  # load() was not called for this model
            newest = store.latest_references_fleet(session, [production.model_id]).get(production.model_id)
        if newest is None or newest.model_version_id != production.id:
            # production changed since load() read the fleet (or its version has none yet): its own newest
            # reference if it has one (it served before: a rollback), else a new one is taken below
            newest = store.latest_reference_of_version(session, production.id)
        kind = cfg.reference.kind
        if newest is not None and newest.kind == kind and not self._due(cfg, newest, at):
            return self._stored(session, cfg, production, newest)
        if kind == "reservoir":
            return self._new_reservoir(session, cfg, production, at, newest)
        start, end, reason = self._window(cfg, production, at)
        frame = self.read(cfg, start, end)
        if kind == "rolling" and len(frame) < cfg.drift.min_samples:
            fallback = self._training_window(cfg, production)
            reason = (f"{len(frame)} rows since promotion in {_span(start, end)}, fewer than drift.min_samples "
                      f"({cfg.drift.min_samples}): the training window stands in")
            start, end = fallback
            frame = self.read(cfg, start, end)
        sample = _encode(_bounded(frame, cfg.reference.size, [cfg.reference.seed, production.id])) \
            if kind == "fixed" else None
        return self._store(session, cfg, production, at, frame, kind=kind, start=start, end=end, reason=reason,
                           sample=sample)

    def observe(self, cfg: ModelConfig, production: ModelVersion, current: pd.DataFrame, at: datetime) -> int:
        """Let a reservoir reference learn from the current window; returns how many new rows it saw."""
        if cfg.reference.kind != "reservoir":
            return 0
        reservoir = self._reservoirs.get(cfg.name)
        if reservoir is None or reservoir.model_version_id != production.id:
            return 0
        if list(current.columns) != list(reservoir.frame.columns):
            return 0  # a schema change: the quality sensor reports it; the sample does not take it in
        ts = _timestamp_column(cfg)
        new = current.loc[(current[ts] >= reservoir.seen_until).to_numpy()] if ts in current.columns else current
        if len(new):
            rng = np.random.default_rng([cfg.reference.seed, reservoir.model_version_id, reservoir.n_seen])
            reservoir.frame = _reservoir_add(reservoir.frame, new, reservoir.n_seen, cfg.reference.size, rng)
            reservoir.n_seen += len(new)
        reservoir.seen_until = max(reservoir.seen_until, ensure_utc(at))
        return len(new)

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _due(cfg: ModelConfig, newest: StoredReference, at: datetime) -> bool:
        """A rolling or reservoir reference older than ``refresh`` is retaken; a fixed one never."""
        if cfg.reference.kind == "fixed":
            return False
        return at - ensure_utc(newest.taken_at) >= cfg.reference.refresh

    def _window(self, cfg: ModelConfig, production: ModelVersion, at: datetime) -> tuple[datetime, datetime, str]:
        if cfg.reference.kind == "fixed":
            start, end = self._training_window(cfg, production)
            return start, end, f"the training window of version {production.version}"
        lag = cfg.reference.lag if cfg.reference.lag is not None else cfg.drift.window
        end = at - lag
        start = end - cfg.reference.length
        if production.promoted_at is not None:
            start = min(max(start, ensure_utc(production.promoted_at)), end)
        return start, end, f"rolling: {_span(start, end)}"

    @staticmethod
    def _training_window(cfg: ModelConfig, production: ModelVersion) -> tuple[datetime, datetime]:
        start, end = production.training_window_start, production.training_window_end
        if start is None or end is None:
            raise MapeError(f"version {production.version} of model {cfg.name} has no training window to compare with")
        return ensure_utc(start), ensure_utc(end)

    def _stored(self, session: Session, cfg: ModelConfig, production: ModelVersion,
                row: StoredReference) -> Reference:
        key = (row.model_version_id, row.version)
        if row.kind == "reservoir":
            reservoir = self._reservoirs.get(cfg.name)
            if reservoir is None or reservoir.base_id != row.id:  # a restart, a rolled-back tick, another controller
                reservoir = self._reservoir_from(session, cfg, row)
                self._reservoirs[cfg.name] = reservoir
            sample_id = row.id
            return Reference(key, row.version, row.kind, lambda: _decode(store.reference_sample(session, sample_id),
                                                                          cfg, row))
        if row.window_start is None or row.window_end is None:
            raise MapeError(f"reference {row.version} of model {cfg.name} has no window")
        start, end = ensure_utc(row.window_start), ensure_utc(row.window_end)

        def read_again() -> pd.DataFrame:
            frame = self.read(cfg, start, end)
            if row.fingerprint and fingerprint(frame) != row.fingerprint:
                sample = store.reference_sample(session, row.id) if len(frame) < row.n_rows else None
                if sample is not None:  # the log lost rows (rotated, deleted): the stored ones stand in
                    stored = _decode(sample, cfg, row)
                    logger.info("Reference %d of model %s (%s): the inference log holds %d of its %d rows in %s any "
                                "longer; the %d rows stored with it stand in", row.version, cfg.name, row.kind,
                                len(frame), row.n_rows, _span(start, end), len(stored))
                    return stored
                logger.warning("Reference %d of model %s (%s) read again from the inference log differs from the rows "
                               "stored as that version (%d rows then, %d now): the log changed in %s", row.version,
                               cfg.name, row.kind, row.n_rows, len(frame), _span(start, end))
            return frame
        return Reference(key, row.version, row.kind, read_again)

    def _store(self, session: Session, cfg: ModelConfig, production: ModelVersion, at: datetime,
               frame: pd.DataFrame, *, kind: str, start: datetime | None, end: datetime | None, reason: str,
               n_seen: int = 0, sample: bytes | None = None) -> Reference:
        assert production.id is not None
        if len(frame) < cfg.drift.min_samples:  # too small to keep: used this tick, read again the next
            return Reference(None, None, kind, lambda: frame, frame)
        row = store.add_reference(session, model_id=production.model_id, model_version_id=production.id, kind=kind,
                                  taken_at=at, window_start=start, window_end=end, n_rows=len(frame),
                                  fingerprint=fingerprint(frame), reason=reason, n_seen=n_seen, sample=sample)
        if sample is not None:
            store.prune_samples(session, production.id, keep=cfg.reference.keep)
        self._newest[production.model_id] = row
        return Reference((production.id, row.version), row.version, kind, lambda: frame, frame)

    def _new_reservoir(self, session: Session, cfg: ModelConfig, production: ModelVersion, at: datetime,
                       newest: StoredReference | None) -> Reference:
        """Snapshot the running sample as a new version; the first of a version is seeded with its training window."""
        assert production.id is not None
        reservoir = self._reservoirs.get(cfg.name)
        if newest is not None and newest.kind == "reservoir" and (reservoir is None or reservoir.base_id != newest.id):
            reservoir = self._reservoir_from(session, cfg, newest)
        if newest is None or newest.kind != "reservoir" or reservoir is None:
            start, end = self._training_window(cfg, production)
            seed = self.read(cfg, start, end)
            rng = np.random.default_rng([cfg.reference.seed, production.id, 0])
            sample = _reservoir_add(seed.iloc[0:0], seed, 0, cfg.reference.size, rng)
            reservoir = _Reservoir(production.id, -1, sample, len(seed), end, at)
            reason = f"reservoir of {cfg.reference.size} rows seeded with the training window ({len(seed)} rows)"
        else:
            reason = f"reservoir of {cfg.reference.size} rows after {reservoir.n_seen} rows seen"
        frame = reservoir.frame
        reference = self._store(session, cfg, production, at, frame, kind="reservoir",
                                start=ensure_utc(production.training_window_start)
                                if production.training_window_start else None,
                                end=reservoir.seen_until, reason=reason, n_seen=reservoir.n_seen,
                                sample=_encode(frame))
        if reference.key is not None:
            newest_row = self._newest[production.model_id]
            assert newest_row is not None
            reservoir.base_id = newest_row.id
        reservoir.stored_at = at
        self._reservoirs[cfg.name] = reservoir
        return reference

    def _reservoir_from(self, session: Session, cfg: ModelConfig, row: StoredReference) -> _Reservoir:
        frame = _decode(store.reference_sample(session, row.id), cfg, row)
        seen_until = ensure_utc(row.window_end) if row.window_end is not None else ensure_utc(row.taken_at)
        return _Reservoir(row.model_version_id, row.id, frame, row.n_seen, seen_until, ensure_utc(row.taken_at))


# --------------------------------------------------------------------------- helpers


def fingerprint(frame: pd.DataFrame) -> str:
    """sha256 of a frame's columns and values (row order included): tells whether a window's rows changed.

    >>> fingerprint(pd.DataFrame({"a": [1, 2]})) == fingerprint(pd.DataFrame({"a": [1, 2]}))
    True
    >>> fingerprint(pd.DataFrame({"a": [1, 2]})) == fingerprint(pd.DataFrame({"a": [2, 1]}))
    False
    """
    digest = hashlib.sha256("\x1f".join(map(str, frame.columns)).encode())
    if len(frame):
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _reservoir_add(sample: pd.DataFrame, new: pd.DataFrame, n_seen: int, size: int,
                   rng: np.random.Generator) -> pd.DataFrame:
    """Algorithm R over a batch: row ``t`` (1-based, counting all rows seen) replaces a random slot with chance size/t.

    >>> rng = np.random.default_rng(0)
    >>> s = _reservoir_add(pd.DataFrame({"x": []}), pd.DataFrame({"x": range(10)}), 0, 5, rng)
    >>> len(s), s["x"].is_unique
    (5, True)
    """
    new = new.reset_index(drop=True)
    free = max(0, size - len(sample))
    fill, rest = new.iloc[:free], new.iloc[free:]
    sample = pd.concat([sample, fill], ignore_index=True) if len(sample) else fill.reset_index(drop=True)
    if not len(rest):
        return sample
    t = n_seen + free + np.arange(1, len(rest) + 1)  # 1-based positions of the remaining rows in the stream
    slots = np.floor(rng.random(len(rest)) * t).astype(np.int64)
    taken = np.flatnonzero(slots < size)
    if not len(taken):
        return sample
    # a slot drawn twice keeps the later row, as the sequential algorithm does
    slots_taken = slots[taken]
    last = len(slots_taken) - 1 - np.unique(slots_taken[::-1], return_index=True)[1]
    positions = np.arange(len(sample))
    positions[slots_taken[last]] = len(sample) + taken[last]
    # one take over both frames keeps every column's dtype (time zones, categories) as it is
    return pd.concat([sample, rest], ignore_index=True).iloc[positions].reset_index(drop=True)


def _bounded(frame: pd.DataFrame, size: int, seed: list[int]) -> pd.DataFrame:
    """``frame`` itself, or a uniform sample of ``size`` of its rows (in their order) when it has more.

    >>> len(_bounded(pd.DataFrame({"x": range(10)}), 4, [0, 1])), len(_bounded(pd.DataFrame({"x": range(3)}), 4, [0]))
    (4, 3)
    """
    if len(frame) <= size:
        return frame
    rows = np.sort(np.random.default_rng(seed).choice(len(frame), size=size, replace=False))
    return frame.iloc[rows].reset_index(drop=True)


def _encode(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _decode(sample: bytes | None, cfg: ModelConfig, row: StoredReference) -> pd.DataFrame:
    if sample is None:
        raise MapeError(f"reference {row.version} of model {cfg.name} has no stored sample")
    return pd.read_parquet(io.BytesIO(sample))


def _timestamp_column(cfg: ModelConfig) -> str:
    return cfg.inference.timestamp_column


def _span(start: datetime, end: datetime) -> str:
    return f"[{start.isoformat()}, {end.isoformat()})"


__all__ = ["Reference", "ReferenceWindows", "WindowReader", "fingerprint"]
