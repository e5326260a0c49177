"""The soak benchmark's bookkeeping, on a tiny fleet for 300 ticks (:mod:`benchmarks.soak`).

Its figures are only worth reporting if the series is really sampled every
``sample_every`` ticks, retention really ran from the tick and kept the raw
observations to its window while decisions and audit events stayed, and the
growth figures are computed from the series the way the report says. Retention
is shortened (6 hours raw) so that 300 five-minute ticks (25 hours) thin data;
the drift cycle is shortened so that the policies act. Runs on SQLite and
PostgreSQL (the ``db_url`` fixture).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from benchmarks.soak import KEPT_TABLES, TICK, growth_percent, soak
from knowledge.database import create_engine_for, session_scope
from knowledge.tables import AuditEvent

TICKS, EVERY, WARMUP = 300, 50, 100
RAW_FOR, BUCKET, PASS_EVERY = timedelta(hours=6), timedelta(hours=1), timedelta(hours=1)


@pytest.mark.slow
def test_a_short_soak_samples_thins_and_computes_its_growth_figures(tmp_path: Path, db_url: str) -> None:
    root = tmp_path / "soak"
    root.mkdir()
    result = soak(db_url, root, ticks=TICKS, models=2, rows_per_hour=240, sample_every=EVERY, warmup=WARMUP,
                  retention={"raw_for": "6h", "bucket": "1h", "every": "1h"},
                  cycle=timedelta(hours=12), drift_for=timedelta(hours=5))
    series = result["series"]

    assert result["errors"] == {}
    # sampled every EVERY ticks, at the logical time of that tick, each sample complete
    assert [s["tick"] for s in series] == list(range(EVERY, TICKS + 1, EVERY))
    assert [s["day"] for s in series] == [round(s["tick"] * TICK / timedelta(days=1), 3) for s in series]
    for sample in series:
        assert sample["rss_mib"] > 0 and sample["heap_blocks"] > 0 and sample["gc_objects"] > 0
        assert sample["kb"]["bytes"] > 0 and sample["rows"]["tick"] == sample["tick"]
        assert 0 < sample["tick_median_s"] <= sample["tick_p95_s"] <= sample["tick_max_s"]
        assert sample["rows"]["observation"] == sample["rows"]["observation.raw"] + sample["rows"]["observation.bucket"]

    # retention ran from the tick once per PASS_EVERY; each pass that folded rows (every one once data was older
    # than RAW_FOR and a whole bucket) said so in the audit
    assert TICKS * TICK // PASS_EVERY - 1 <= result["events"]["retention.pass"] <= TICKS * TICK // PASS_EVERY + 1
    first_due = (RAW_FOR + BUCKET) // TICK
    engine = create_engine_for(db_url)
    try:
        with session_scope(engine) as session:
            audited = session.execute(select(func.count()).select_from(AuditEvent)
                                      .where(AuditEvent.kind == "knowledge.retention")).scalar_one()
    finally:
        engine.dispose()
    assert audited >= (TICKS - first_due) * TICK // PASS_EVERY - 1
    # the raw rows are bounded by the window (the first sample is before any pass: all rows raw, at a steady rate)
    per_tick = series[0]["rows"]["observation.raw"] / EVERY
    end = series[-1]["rows"]
    window_ticks = (RAW_FOR + BUCKET + PASS_EVERY) / TICK
    assert end["observation.bucket"] > 0
    assert end["observation.raw"] <= 1.1 * per_tick * window_ticks < 0.5 * per_tick * TICKS
    assert end["observation"] < 0.6 * per_tick * TICKS
    # decisions were made and acted on; nothing that is evidence or audit ever shrank
    assert end["decision"] > 0 and end["action_run"] > 0
    assert result["kept_tables_never_shrank"] == {table: True for table in KEPT_TABLES}
    assert result["notifications_received"] > 0

    # the growth figures: the last sample against the warm-up sample, in percent
    warm = next(s for s in series if s["tick"] == WARMUP)
    assert result["rss"]["warm_mib"] == warm["rss_mib"] and result["rss"]["end_mib"] == series[-1]["rss_mib"]
    assert result["rss"]["growth_percent"] == round(100 * (series[-1]["rss_mib"] - warm["rss_mib"]) / warm["rss_mib"],
                                                    1)
    assert result["heap"]["blocks_growth_percent"] == growth_percent(warm["heap_blocks"], series[-1]["heap_blocks"])
    assert result["kb"]["end_bytes"] == series[-1]["kb"]["bytes"]
    assert result["ticks_per_s"] > 0 and result["logical_days"] == round(TICKS * TICK / timedelta(days=1), 2)
    # where the memory went: SQLite's (bounded by the setting), Arrow's, and the rest of the trimmed RSS
    end_sample = series[-1]
    assert result["rss"]["breakdown_mib"]["sqlite_mib"] == {"warm": warm["sqlite_mib"], "end": end_sample["sqlite_mib"]}
    assert result["rss"]["rest_mib"]["end"] == round(
        end_sample["rss_trimmed_mib"] - end_sample["sqlite_mib"] - end_sample["arrow_mib"], 1)
    assert all(0 < s["rss_trimmed_mib"] and 0 <= s["arrow_mib"] for s in series)
    if make_url(db_url).get_backend_name() == "sqlite":
        assert series[-1]["kb"]["file_bytes"] <= series[-1]["kb"]["bytes"]
        assert all(0 < s["sqlite_mib"] <= result["rss"]["sqlite_cache_mib"] + 8 for s in series)


def test_the_growth_figure_is_the_change_against_the_warm_up_in_percent() -> None:
    assert growth_percent(400.0, 420.0) == 5.0
    assert growth_percent(400.0, 380.0) == -5.0
    assert growth_percent(3.0, 4.0) == 33.3


def test_a_rotated_logs_deleted_parts_leave_the_sources_cache(tmp_path: Path) -> None:
    """What the soak found: every part ever read stayed decoded in memory after its log rotated it away (2 a tick).

    A directory of five-minute parts, read window by window while the oldest
    parts are deleted: the cache holds only files that still exist.
    """
    import pandas as pd

    from mape.data import FileSource

    start = pd.Timestamp("2026-10-01", tz="UTC")
    log = tmp_path / "log"
    log.mkdir()
    source = FileSource(log, kind="parquet")
    assert source.cache is not None
    for k in range(40):
        at = start + k * TICK
        pd.DataFrame({"id": range(k * 10, k * 10 + 10), "timestamp": pd.date_range(at, periods=10, freq="30s"),
                      "x": float(k)}).to_parquet(log / f"part-{k:03d}.parquet")
        if k >= 12:
            (log / f"part-{k - 12:03d}.parquet").unlink()  # the log keeps the last hour
        window = source.read((at - timedelta(minutes=55)).to_pydatetime(), (at + TICK).to_pydatetime())
        assert len(window) == 10 * min(k + 1, 12)
        assert len(source.cache) <= 12


def test_every_second_episode_is_a_concept_change(tmp_path: Path) -> None:
    """The soak's world keeps the loop acting: every second episode keeps the population and inverts its labels,
    so a version fitted to it fails on the normal days (and no drift detector sees it: a concept change)."""
    from benchmarks.soak import START, Fleet

    engine = create_engine_for(f"sqlite:///{tmp_path / 'kb.db'}")
    try:
        fleet = Fleet(tmp_path, engine, 2, rows_per_hour=120, cycle=timedelta(hours=24), drift_for=timedelta(hours=8))
        hours = [START + timedelta(hours=h) for h in range(96)]
        # model 0's episodes start 6 hours in, model 1's 12 hours later; the second, fourth, ... invert instead
        for m, first in ((0, 6), (1, 18)):
            drifted = [h for h, at in enumerate(hours) if fleet.drifted(m, at)]
            inverted = [h for h, at in enumerate(hours) if fleet.inverted(m, at)]
            assert drifted == [h for k in (0, 2) for h in range(first + 24 * k, first + 24 * k + 8) if h < 96]
            assert inverted == [h for k in (1, 3) for h in range(first + 24 * k, first + 24 * k + 8) if h < 96]
        never = Fleet(tmp_path, engine, 1, rows_per_hour=120, invert_every=None)
        assert [h for h, at in enumerate(hours) if never.drifted(0, at)] == [
            h for k in range(4) for h in range(6 + 24 * k, 14 + 24 * k)]
        assert not any(never.inverted(0, at) for at in hours)
    finally:
        engine.dispose()
