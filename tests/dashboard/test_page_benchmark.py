"""The page benchmark's own machinery on a small knowledge base: every page drawn, and drawn with something in it."""

from __future__ import annotations

from pathlib import Path

from benchmarks.dashboard import _config, draw_pages, fill


def test_a_small_fleet_fills_and_every_page_draws_with_data(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("MAPE_CONFIG", raising=False)  # draw_pages sets them: restored afterwards
    monkeypatch.delenv("MAPE_DB_URL", raising=False)
    url = f"sqlite:///{tmp_path / 'mape.db'}"
    held = fill(url, models=2, hours=48, decisions=60)
    assert held["observations"] == 2 * 48 * 70 and held["decisions"] == 60 and held["action_runs"] == 4
    (tmp_path / "place").mkdir()
    result = draw_pages(_config(tmp_path / "place", url), repeats=1)
    pages = result["pages"]
    assert set(pages) == {"Fleet", "Model", "Decisions", "Approvals", "Policies", "Carbon", "Model (all)",
                          "Carbon (30 d)"}
    assert pages["Fleet"]["tables"] == 1
    assert pages["Model"]["charts"] >= 5 and pages["Model"]["points"] > 48  # the last days of signals, downsampled
    assert pages["Carbon"]["charts"] >= 2 and pages["Decisions"]["tables"] >= 1
    assert all(p["median_s"] > 0 for p in pages.values())
