"""Reference windows: fixed, rolling and reservoir, stored and versioned in the knowledge base (real KB, real files)."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import event
from sqlmodel import col, select

from knowledge import registry
from knowledge.database import session_scope
from knowledge.references import latest_references_fleet, reference_sample, references
from knowledge.tables import Observation, ReferenceWindow
from mape.config import ModelConfig
from mape.data import open_source
from mape.monitor.reference import ReferenceWindows, _reservoir_add, fingerprint

T0 = datetime(2026, 3, 2, tzinfo=timezone.utc)
STEP = timedelta(seconds=30)  # 120 rows an hour
TRAINING = (T0, T0 + timedelta(hours=4))
PROMOTED = T0 + timedelta(hours=4)


def write_log(path, start: datetime, end: datetime, *, seed: int = 0, extra: str | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    times = pd.date_range(start, end, freq=STEP, inclusive="left")
    frame = pd.DataFrame({"id": np.arange(len(times)) + seed * 1_000_000, "timestamp": times,
                          "x1": rng.normal(size=len(times)), "c1": rng.choice(["a", "b"], size=len(times)),
                          "prediction": rng.integers(0, 2, size=len(times))})
    if extra:
        frame[extra] = 1.0
    frame.to_parquet(path)
    return frame


@pytest.fixture
def log_dir(tmp_path):
    directory = tmp_path / "log"
    directory.mkdir()
    write_log(directory / "part-0.parquet", T0, T0 + timedelta(days=3))
    return directory


def config(log_dir, name: str = "churn", **reference) -> ModelConfig:
    return ModelConfig.model_validate({
        "name": name, "features": {"numeric": ["x1"], "categorical": ["c1"]},
        "inference": {"kind": "parquet", "path": str(log_dir)},
        "labels_source": {"kind": "parquet", "path": str(log_dir)},
        "training": {"entrypoint": "examples.churn:train"}, "version_column": None,
        "drift": {"window": "1h", "min_samples": 100}, "reference": reference,
    })


def reader():
    sources = {}

    def read(cfg: ModelConfig, start: datetime, end: datetime) -> pd.DataFrame:
        source = sources.setdefault(cfg.name, open_source(cfg.inference))
        return source.read(start, end)
    return read


def register(session, *, training=TRAINING, promoted=PROMOTED, name: str = "churn"):
    model = registry.upsert_model(session, name=name)
    version = registry.register_version(session, model_id=model.id, artifact_uri="file:///m", training_window=training)
    registry.promote(session, version, actor="test", at=promoted)
    return model.id, version


def promote_new(engine, model_id: int, training: tuple[datetime, datetime]) -> int:
    """Register a version trained on ``training`` and promote it at the window's end; its id."""
    with session_scope(engine) as session:
        version = registry.register_version(session, model_id=model_id, artifact_uri="file:///m2",
                                            training_window=training)
        registry.promote(session, version, actor="test", at=training[1])
        return version.id


def resolve(engine, windows: ReferenceWindows, cfg: ModelConfig, at: datetime):
    with session_scope(engine) as session:
        production = registry.production_version(session, registry.get_model(session, "churn").id)
        windows.load(session, [production.model_id])
        reference = windows.resolve(session, cfg, production, at)
        frame = reference.frame()
    return reference, frame


def stored(engine) -> list[ReferenceWindow]:
    """The stored references, oldest first, with ``has_sample`` set."""
    with session_scope(engine) as session:
        model_id = registry.get_model(session, "churn").id
        rows = list(reversed(references(session, model_id)))
        for row in rows:
            row.__dict__["has_sample"] = reference_sample(session, row.id) is not None
        return rows


def test_fixed_reference_is_the_training_window_stored_once_and_found_after_a_restart(engine, log_dir):
    cfg = config(log_dir)
    with session_scope(engine) as session:
        register(session)
    windows = ReferenceWindows(reader())
    first, frame = resolve(engine, windows, cfg, T0 + timedelta(hours=10))
    assert first.key is not None and first.version == 1 and first.kind == "fixed"
    assert len(frame) == 4 * 120 and frame["timestamp"].min() == T0
    later, _ = resolve(engine, windows, cfg, T0 + timedelta(days=2))
    assert later.key == first.key
    rows = stored(engine)
    assert len(rows) == 1
    assert (rows[0].window_start, rows[0].window_end, rows[0].n_rows) == (*TRAINING, 480)
    assert rows[0].fingerprint == fingerprint(frame) and rows[0].has_sample  # its rows, for when the log rotates

    restarted, again = resolve(engine, ReferenceWindows(reader()), cfg, T0 + timedelta(days=2))
    assert restarted.key == first.key
    assert fingerprint(again) == rows[0].fingerprint


def test_a_new_production_version_brings_its_own_reference(engine, log_dir):
    cfg = config(log_dir)
    with session_scope(engine) as session:
        model_id, _ = register(session)
    windows = ReferenceWindows(reader())
    first, _ = resolve(engine, windows, cfg, T0 + timedelta(hours=10))
    second_id = promote_new(engine, model_id, (T0 + timedelta(hours=20), T0 + timedelta(hours=30)))
    new, frame = resolve(engine, windows, cfg, T0 + timedelta(hours=31))
    assert new.key == (second_id, 2) and new.key != first.key
    assert frame["timestamp"].min() == T0 + timedelta(hours=20) and len(frame) == 10 * 120
    assert [(r.version, r.model_version_id) for r in stored(engine)][-1] == (2, second_id)


def test_rolling_reference_moves_every_refresh_and_starts_from_the_training_window(engine, log_dir):
    cfg = config(log_dir, kind="rolling", length="6h", refresh="12h")
    with session_scope(engine) as session:
        register(session)
    windows = ReferenceWindows(reader())
    # 30 minutes after promotion: 60 rows since, fewer than min_samples; the training window stands in
    early, frame = resolve(engine, windows, cfg, PROMOTED + timedelta(hours=1, minutes=30))
    assert early.kind == "rolling" and len(frame) == 480 and frame["timestamp"].min() == T0
    assert "training window stands in" in stored(engine)[-1].reason
    # the next refresh: the 6 hours ending an hour (the drift window, the default lag) before the tick
    at = PROMOTED + timedelta(hours=20)
    moved, frame = resolve(engine, windows, cfg, at)
    assert moved.version == 2
    assert frame["timestamp"].min() == at - timedelta(hours=7) and frame["timestamp"].max() < at - timedelta(hours=1)
    same, _ = resolve(engine, windows, cfg, at + timedelta(hours=11))
    assert same.key == moved.key
    newer, _ = resolve(engine, windows, cfg, at + timedelta(hours=12))
    assert newer.version == 3
    rows = stored(engine)
    assert [r.kind for r in rows] == ["rolling"] * 3 and all(r.n_rows for r in rows)
    assert (rows[1].window_start, rows[1].window_end) == (at - timedelta(hours=7), at - timedelta(hours=1))


def test_rolling_reference_never_reaches_before_the_promotion(engine, log_dir):
    cfg = config(log_dir, kind="rolling", length="2d", lag="0s")
    with session_scope(engine) as session:
        register(session)
    _, frame = resolve(engine, ReferenceWindows(reader()), cfg, PROMOTED + timedelta(hours=5))
    assert frame["timestamp"].min() == PROMOTED and len(frame) == 5 * 120


def test_a_reference_too_small_is_used_but_not_stored_until_the_log_fills(engine, tmp_path):
    directory = tmp_path / "log"
    directory.mkdir()
    write_log(directory / "part-0.parquet", T0, T0 + timedelta(minutes=30))  # 60 rows of the training window
    cfg = config(directory)
    with session_scope(engine) as session:
        register(session)
    windows = ReferenceWindows(reader())
    small, frame = resolve(engine, windows, cfg, T0 + timedelta(hours=10))
    assert small.key is None and small.version is None and len(frame) == 60
    assert stored(engine) == []
    write_log(directory / "part-1.parquet", T0 + timedelta(minutes=30), T0 + timedelta(hours=4), seed=1)
    full, frame = resolve(engine, windows, cfg, T0 + timedelta(hours=11))
    assert full.version == 1 and len(frame) == 480


def test_reservoir_is_seeded_learns_from_windows_and_is_snapshot_each_refresh(engine, log_dir):
    cfg = config(log_dir, kind="reservoir", size=300, refresh="6h", keep=2)
    with session_scope(engine) as session:
        register(session)
    windows = ReferenceWindows(reader())
    read = reader()
    at = PROMOTED + timedelta(hours=1)
    first, frame = resolve(engine, windows, cfg, at)
    assert first.version == 1 and len(frame) == 300 and frame["timestamp"].max() < TRAINING[1]
    assert list(frame.columns) == ["id", "timestamp", "x1", "c1", "prediction"]
    # the monitor hands it each hour's window: 13 hours of 120 rows
    with session_scope(engine) as session:
        production = registry.production_version(session, registry.get_model(session, "churn").id)
    for hour in range(13):
        tick = at + timedelta(hours=hour)
        assert windows.observe(cfg, production, read(cfg, tick - timedelta(hours=1), tick), tick) == 120
        assert windows.observe(cfg, production, read(cfg, tick - timedelta(hours=1), tick), tick) == 0  # seen
        resolve(engine, windows, cfg, tick)
    rows = stored(engine)
    assert [r.version for r in rows] == [1, 2, 3]  # seeded, then a snapshot at +6h and at +12h
    assert rows[-1].n_seen == 480 + 13 * 120 and rows[-1].n_rows == 300
    assert [r.has_sample for r in rows] == [False, True, True]  # keep=2
    # the last snapshot holds rows of the windows, about in proportion to what was seen (uniform sample)
    _, snapshot = resolve(engine, ReferenceWindows(reader()), cfg, at + timedelta(hours=12, minutes=5))
    share_new = float((snapshot["timestamp"] >= TRAINING[1]).mean())
    assert 0.6 < share_new < 0.85  # 1,440 of 1,920 rows seen are after training: 0.75
    assert fingerprint(snapshot) == rows[-1].fingerprint


def test_reservoir_does_not_learn_from_a_window_with_another_schema(engine, log_dir, tmp_path):
    cfg = config(log_dir, kind="reservoir", size=200)
    with session_scope(engine) as session:
        register(session)
        production = registry.production_version(session, registry.get_model(session, "churn").id)
    windows = ReferenceWindows(reader())
    resolve(engine, windows, cfg, PROMOTED + timedelta(hours=1))
    broken = write_log(tmp_path / "other.parquet", PROMOTED, PROMOTED + timedelta(hours=1), extra="surprise")
    broken["timestamp"] = broken["timestamp"].dt.tz_localize(None).dt.tz_localize("UTC")
    assert windows.observe(cfg, production, broken, PROMOTED + timedelta(hours=1)) == 0


def test_reservoir_survives_a_restart_and_a_rolled_back_tick(engine, log_dir):
    cfg = config(log_dir, kind="reservoir", size=200, refresh="1h")
    with session_scope(engine) as session:
        register(session)
    windows = ReferenceWindows(reader())
    at = PROMOTED + timedelta(hours=1)
    resolve(engine, windows, cfg, at)
    # a tick that stores a snapshot and then fails: its row is rolled back
    with pytest.raises(RuntimeError):
        with session_scope(engine) as session:
            production = registry.production_version(session, registry.get_model(session, "churn").id)
            windows.load(session, [production.model_id])
            assert windows.resolve(session, cfg, production, at + timedelta(hours=1)).version == 2
            raise RuntimeError("the tick failed after sensing")
    assert [r.version for r in stored(engine)] == [1]
    again, _ = resolve(engine, windows, cfg, at + timedelta(hours=2))
    assert again.version == 2  # the in-memory sample was reloaded from version 1, then snapshot
    restarted = ReferenceWindows(reader())
    kept, frame = resolve(engine, restarted, cfg, at + timedelta(hours=2, minutes=30))
    assert kept.key == again.key and len(frame) == 200


def test_changing_the_kind_takes_a_reference_of_the_new_kind(engine, log_dir):
    with session_scope(engine) as session:
        register(session)
    windows = ReferenceWindows(reader())
    resolve(engine, windows, config(log_dir), PROMOTED + timedelta(hours=2))
    rolled, _ = resolve(engine, windows, config(log_dir, kind="rolling", length="1h"), PROMOTED + timedelta(hours=3))
    assert rolled.version == 2 and [r.kind for r in stored(engine)] == ["fixed", "rolling"]


def test_reservoir_sampling_is_uniform_over_the_stream():
    """Algorithm R over batches: every row of a 1,000-row stream ends in a 100-row sample with chance 1/10."""
    counts = np.zeros(1000)
    for seed in range(200):
        rng = np.random.default_rng(seed)
        sample, seen = pd.DataFrame({"x": np.array([], dtype=np.int64)}), 0
        for start in range(0, 1000, 37):
            batch = pd.DataFrame({"x": np.arange(start, min(start + 37, 1000))})
            sample = _reservoir_add(sample, batch, seen, 100, rng)
            seen += len(batch)
        assert sample["x"].is_unique and len(sample) == 100
        counts[sample["x"].to_numpy()] += 1
    deciles = counts.reshape(10, 100).sum(axis=1)  # 2,000 expected in each tenth of the stream
    assert np.all(np.abs(deciles - 2000) < 200), deciles
    assert sample["x"].dtype == np.int64


def test_reference_config_rejects_bad_durations(log_dir):
    with pytest.raises(ValueError, match="refresh"):
        config(log_dir, kind="rolling", refresh="0s")
    with pytest.raises(ValueError, match="lag"):
        config(log_dir, kind="rolling", lag="-1h")
    with pytest.raises(ValueError, match="kind"):
        config(log_dir, kind="sliding")


def test_reference_rows_are_listed_newest_first_without_samples(engine, log_dir):
    with session_scope(engine) as session:
        register(session)
    resolve(engine, ReferenceWindows(reader()), config(log_dir, kind="reservoir", size=150), PROMOTED)
    with session_scope(engine) as session:
        rows = session.exec(select(ReferenceWindow).order_by(col(ReferenceWindow.version))).all()
        assert rows[0].sample is not None and rows[0].n_rows == 150


def test_monitor_compares_with_a_rolling_reference_that_follows_a_lasting_shift(engine, tmp_path):
    """x1 moves by one sigma for good: a fixed reference flags it every tick; a rolling one adopts the new level."""
    from mape.monitor import Monitor

    directory = tmp_path / "log"
    directory.mkdir()
    frame = write_log(directory / "part-0.parquet", T0, T0 + timedelta(days=2))
    shift_at = PROMOTED + timedelta(hours=6)
    frame.loc[frame["timestamp"] >= shift_at, "x1"] += 1.0
    frame.to_parquet(directory / "part-0.parquet")
    with session_scope(engine) as session:
        ids = {name: register(session, name=name)[0] for name in ("fixed", "rolling")}
    monitors = {"fixed": Monitor([config(directory, "fixed")]),
                "rolling": Monitor([config(directory, "rolling", kind="rolling", length="6h", refresh="6h")])}
    verdicts: dict[str, list[tuple[bool | None, float | None]]] = {"fixed": [], "rolling": []}
    for hours in (8, 13, 20, 27):
        at = PROMOTED + timedelta(hours=hours)
        for name, monitor in monitors.items():
            with session_scope(engine) as session:
                report = monitor.run(session, {name: ids[name]}, at)
                version = session.exec(select(Observation.value).where(
                    Observation.time == at, Observation.model_id == ids[name],
                    Observation.metric == "drift.reference_version")).one()
            verdicts[name].append((report.model(name).detected, version))
    assert [d for d, _ in verdicts["fixed"]] == [True] * 4
    # at +8h the rolling window (+1h..+7h, lag 1h) is mostly before the shift; by +20h it holds only shifted rows
    assert [d for d, _ in verdicts["rolling"]][0] is True
    assert [d for d, _ in verdicts["rolling"]][2:] == [False, False]
    versions = [v for _, v in verdicts["rolling"]]
    assert versions == [1, 1, 2, 3]  # a new version once the last is 6 hours old (the refresh)
    assert [v for _, v in verdicts["fixed"]] == [1, 1, 1, 1]


def test_a_stored_window_that_changed_in_the_log_is_reported_when_read_again(engine, log_dir, caplog):
    cfg = config(log_dir)
    with session_scope(engine) as session:
        register(session)
    resolve(engine, ReferenceWindows(reader()), cfg, PROMOTED)
    write_log(log_dir / "part-1.parquet", T0, T0 + timedelta(hours=1), seed=7)  # late rows inside the training window
    with caplog.at_level("WARNING", logger="mape.monitor.reference"):
        again, frame = resolve(engine, ReferenceWindows(reader()), cfg, PROMOTED + timedelta(hours=1))
    assert again.version == 1 and len(frame) == 480 + 120
    assert "Reference 1 of model churn (fixed) read again from the inference log differs" in caplog.text
    assert "(480 rows then, 600 now)" in caplog.text


def test_a_version_rolled_back_to_after_its_log_rotated_away_compares_with_its_stored_rows(engine, log_dir):
    """What the soak found: a rollback to a version trained days ago, whose training window the rotating log had
    deleted, compared every window with 0 reference rows (no drift measured) until the next promotion."""
    cfg = config(log_dir)
    with session_scope(engine) as session:
        model_id, first_version = register(session)
        first_id = first_version.id
    windows = ReferenceWindows(reader())
    first, frame = resolve(engine, windows, cfg, PROMOTED + timedelta(hours=1))
    second_id = promote_new(engine, model_id, (T0 + timedelta(hours=40), T0 + timedelta(hours=44)))
    resolve(engine, windows, cfg, T0 + timedelta(hours=45))
    # the log keeps the last day: the first version's training window is gone
    kept = pd.read_parquet(log_dir / "part-0.parquet")
    kept[kept["timestamp"] >= T0 + timedelta(days=2)].to_parquet(log_dir / "part-0.parquet")
    with session_scope(engine) as session:
        registry.promote(session, session.get(type(first_version), first_id), actor="rollback",
                         at=T0 + timedelta(hours=60))

    for restarted in (False, True):  # the controller that did it, and one that starts later
        back, again = resolve(engine, ReferenceWindows(reader()) if restarted else windows, cfg,
                              T0 + timedelta(hours=61))
        assert back.key == first.key  # its own reference again: the sensors fitted on it return
        assert len(again) == len(frame) == 480 and fingerprint(again) == fingerprint(frame)
    assert [r.model_version_id for r in stored(engine)] == [first_id, second_id]  # nothing new stored


def test_a_fixed_reference_stores_at_most_size_rows_of_its_window(engine, log_dir):
    cfg = config(log_dir, size=100)
    with session_scope(engine) as session:
        register(session)
    _, frame = resolve(engine, ReferenceWindows(reader()), cfg, PROMOTED)
    assert len(frame) == 480  # the sensors compare with the whole window
    with session_scope(engine) as session:
        [row] = references(session, registry.get_model(session, "churn").id)
        sample = pd.read_parquet(io.BytesIO(reference_sample(session, row.id)))
    assert len(sample) == 100 and sample["timestamp"].is_monotonic_increasing
    assert set(sample["id"]) <= set(frame["id"])


def test_the_fleet_read_finds_each_production_versions_own_reference(engine, log_dir):
    """One query a tick for the whole fleet, also for a model back on a version that served before."""
    cfg = config(log_dir)
    with session_scope(engine) as session:
        model_id, first_version = register(session)
        first_id = first_version.id
        newcomer_id, _ = register(session, name="newcomer")  # in production, no reference taken yet
        idle = registry.upsert_model(session, name="idle")  # a version, none in production
        registry.register_version(session, model_id=idle.id, artifact_uri="file:///i", training_window=TRAINING)
        idle_id = idle.id
    windows = ReferenceWindows(reader())
    first, _ = resolve(engine, windows, cfg, PROMOTED + timedelta(hours=1))
    promote_new(engine, model_id, (T0 + timedelta(hours=20), T0 + timedelta(hours=30)))
    second, _ = resolve(engine, windows, cfg, T0 + timedelta(hours=31))
    assert second.version == 2 and second.key != first.key
    with session_scope(engine) as session:
        assert {m: r.version for m, r in latest_references_fleet(session, [model_id, newcomer_id, idle_id]).items()} \
            == {model_id: 2}
        registry.promote(session, session.get(type(first_version), first_id), actor="rollback",
                         at=T0 + timedelta(hours=40))
    with session_scope(engine) as session:
        found = latest_references_fleet(session, [model_id, newcomer_id, idle_id])
    assert {m: (r.model_version_id, r.version) for m, r in found.items()} == {model_id: (first_id, 1)}

    statements: list[str] = []

    def count(conn, cursor, statement, *args):  # noqa: ANN001 - SQLAlchemy's event signature
        statements.append(statement)
    event.listen(engine, "before_cursor_execute", count)
    try:
        back, _ = resolve(engine, windows, cfg, T0 + timedelta(hours=41))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert back.key == first.key
    # the fleet read, and nothing else about references (the rolled-back version's own is in it)
    assert len([s for s in statements if "reference_window" in s]) == 1
