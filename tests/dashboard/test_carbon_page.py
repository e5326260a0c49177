"""The Carbon page: totals and savings of actions, intensity with deferral windows, GPUs per device; empty states."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from dashboard.carbon import savings_text
from examples.carbon import DIURNAL_GRID
from knowledge.carbon_ledger import ActionEmissions
from knowledge.database import create_engine_for, session_scope
from tests.dashboard.app_harness import knowledge_base, open_app, open_page, sign_in
from tests.knowledge.test_carbon_ledger import add_carbon_history


def _with_history(tmp_path: Path, carbon: dict | None = None) -> Path:
    config = knowledge_base(tmp_path)
    engine = create_engine_for(f"sqlite:///{tmp_path / 'mape.db'}")
    with session_scope(engine) as session:
        add_carbon_history(session)
    engine.dispose()
    if carbon is not None:
        settings = yaml.safe_load(config.read_text())
        config.write_text(yaml.safe_dump({**settings, "carbon": carbon}))
    return config


def _charts(app) -> list[dict]:  # type: ignore[no-untyped-def]
    """The Vega-Lite specs of the page's Altair charts (AppTest shows them as unknown vega_lite_chart elements)."""
    return [json.loads(chart.proto.spec) for chart in app.get("vega_lite_chart")]


def _titles(specs: list[dict]) -> list[str]:
    return [spec.get("title", {}).get("text", "") if isinstance(spec.get("title"), dict) else spec.get("title", "")
            for spec in specs]


def test_a_viewer_sees_totals_savings_intensity_windows_and_gpus(tmp_path: Path, monkeypatch):
    config = _with_history(tmp_path, carbon={"provider": "series", "path": str(DIURNAL_GRID)})
    app = open_page(sign_in(open_app(config, monkeypatch), "vic"), "Carbon")
    assert app.title[0].value == "Carbon and resources"
    assert "last 7 days up to the latest activity, 2026-01-06 06:00 UTC" in app.caption[0].value
    metrics = {m.label: m.value for m in app.metric}
    assert metrics == {"Action runs finished": "5", "Energy measured": "4.5 kWh", "Emissions": "1.05 kg",
                       "Saved against running at once": "150 g"}
    text = " ".join(m.value for m in app.markdown)
    assert ("Deferral saved **150 g** (13.6% of the 1.1 kg forecast for running at once) on the 3 runs with both a "
            "run-now forecast and measured emissions") in text
    assert "1 run with energy measured but no run-now forecast" in text and "1 run had no energy measured" in text
    titles = _titles(_charts(app))
    assert titles[:2] == ["Emissions of the runs finished, per action kind",
                          "Deferred runs: forecast for running at once, for the window chosen, and realised"]
    assert any(t.startswith("Intensity; green: windows chosen") for t in titles)
    assert "Utilization (share of time a kernel ran)" in titles and "Memory used" in titles
    intensity = next(s for s in _charts(app) if _titles([s])[0].startswith("Intensity"))
    marks = [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"]
             for layer in intensity["layer"]]
    assert marks == ["rect", "line", "rule"]  # windows, observed and trace lines, run-now starts
    assert any("the trace diurnal-grid.csv" in c.value for c in app.caption)
    assert "Devices: **GPU-a**, **MIG-b**" in text
    assert [d for d in app.dataframe[0].value["device"]] == ["GPU-a", "MIG-b"]
    assert "3 scored, 1 pending, 0 without actuals" in text


def test_the_range_is_kept_in_the_address_and_a_short_one_leaves_older_runs_out(tmp_path: Path, monkeypatch):
    config = _with_history(tmp_path)
    app = open_page(sign_in(open_app(config, monkeypatch), "ada"), "Carbon")
    app.radio(key="carbon_range").set_value("24h")
    app.run()
    assert not app.exception, app.exception
    assert app.query_params["range"] == "24h"
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Action runs finished"] == "4"  # back to 06:00:01 on the 5th: the run that finished at 06:00 is out
    assert any("No carbon provider is configured" in c.value for c in app.caption)


def test_an_unknown_range_in_the_address_is_named_and_the_default_shown(tmp_path: Path, monkeypatch):
    config = _with_history(tmp_path)
    app = sign_in(open_app(config, monkeypatch), "vic")
    app.query_params["range"] = "fortnight"
    app = open_page(app, "Carbon")
    assert "range 'fortnight' in the address is not one of 24h, 7d, 30d" in app.warning[0].value
    assert app.radio(key="carbon_range").value == "7d"


def test_an_empty_knowledge_base_says_what_is_missing(tmp_path: Path, monkeypatch):
    config = knowledge_base(tmp_path)
    settings = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**settings, "carbon": {"provider": "uk"}}))
    app = open_page(sign_in(open_app(config, monkeypatch), "vic"), "Carbon")
    infos = [i.value for i in app.info]
    assert infos == ["No data yet: no action run has finished and no carbon intensity has been observed.",
                     "No action run finished in this range: no energy or emissions to show.",
                     "No carbon intensity observed in this range (the Monitor writes carbon.intensity when carbon is "
                     "configured).",
                     "No GPU readings in this range (models with a gpu sensor write gpu.device.* observations)."]
    assert any("The uk provider is not a local file" in c.value for c in app.caption)
    assert not _charts(app)


def test_the_savings_text_says_when_deferral_cost_carbon_and_when_nothing_can_be_said():
    cost = ActionEmissions(action="all", runs=2, metered=2, energy_kwh=2.0, emissions_kg=0.5, compared=2,
                           run_now_kg=0.4, chosen_kg=0.3, realised_kg=0.5)
    assert savings_text(cost).startswith("Deferral cost **100 g** (25.0% of the 400 g forecast for running at once) "
                                         "on the 2 runs with both")
    unknown = ActionEmissions(action="all", runs=3, metered=1, energy_kwh=1.0, emissions_kg=0.2, compared=0,
                              run_now_kg=0.0, chosen_kg=0.0, realised_kg=0.0)
    assert savings_text(unknown) == (
        "No run has both a run-now forecast and measured emissions, so no saving can be said. 1 run with energy "
        "measured but no run-now forecast (its policy does not defer, or no forecast was known) counts in the totals "
        "only; 2 runs had no energy measured.")
