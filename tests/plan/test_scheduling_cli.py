"""``mape carbon plan`` and ``mape carbon backtest``: JSON out, one clear line and status 2 on bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from examples.carbon import DIURNAL_GRID, WINDY_GRID
from mape.cli import app

runner = CliRunner()


def plan(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["carbon", "plan", *args])


def grid(tmp_path: Path, text: str, name: str = "grid.csv") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


HOURLY = "time,g\n" + "".join(f"2026-03-10T{h:02d}:00:00Z,{v}\n" for h, v in enumerate([300, 100, 200, 50, 400, 90]))


def test_plan_prints_the_chosen_window_as_json(tmp_path: Path):
    result = plan("--trace", grid(tmp_path, HOURLY), "--duration", "2h", "--earliest", "2026-03-10T00:00:00Z",
                  "--deadline", "2026-03-10T05:00:00Z")
    assert result.exit_code == 0, result.output
    window = json.loads(result.output)
    assert window["start"] == "2026-03-10T02:00:00+00:00" and window["end"] == "2026-03-10T04:00:00+00:00"
    assert window["latest_start"] == "2026-03-10T03:00:00+00:00", "the deadline is when the job must be done"
    assert (window["score"], window["run_now_score"], window["saving"]) == (125.0, 200.0, 0.375)
    assert window["objective"] == {"carbon": 1.0} and window["deferred_by"] == "2h"


def test_plan_takes_the_deadline_as_a_duration_after_the_earliest_start():
    result = plan("--trace", str(DIURNAL_GRID), "--duration", "1h", "--earliest", "2026-03-10T00:00", "--deadline", "9h")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["latest_start"] == "2026-03-10T08:00:00+00:00"


def test_plan_on_price_and_on_a_mix(tmp_path: Path):
    carbon = grid(tmp_path, HOURLY)
    price = grid(tmp_path, "t,eur\n" + "".join(f"2026-03-10T{h:02d}:00Z,{v}\n" for h, v in
                                              enumerate([10, 90, 90, -5, 90, 90])), "price.csv")
    common = ["--trace", carbon, "--duration", "1h", "--earliest", "2026-03-10T00:00Z", "--deadline", "6h"]
    cheapest = json.loads(plan(*common, "--price", price, "--objective", "price").output)
    assert cheapest["start"] == "2026-03-10T03:00:00+00:00" and cheapest["means"] == {"price": -5.0}
    mixed = plan(*common, "--price", price, "--objective", "carbon=0.5,price=0.5")
    assert mixed.exit_code == 0, mixed.output
    assert set(json.loads(mixed.output)["means"]) == {"carbon", "price"}


@pytest.mark.parametrize(("args", "message"), [
    (["--earliest", "tomorrow"], "--earliest 'tomorrow' is not a time; use ISO 8601"),
    (["--deadline", "later"], "--deadline 'later' is not a time"),
    (["--deadline", "2026-03-09T00:00Z"], "the deadline 2026-03-09T00:00:00+00:00 is before the earliest start"),
    (["--duration", "9h"], "a 9h job does not fit between 2026-03-10T00:00:00+00:00 and 2026-03-10T05:00:00+00:00"),
    (["--duration", "soon"], "--duration: 'soon' is not a duration"),
    (["--objective", "price"], "the objective weighs price; give the price trace with --price FILE"),
    (["--objective", "carbon=x"], "weight 'x' of 'carbon' is not a number"),
    (["--earliest", "2026-04-10T00:00Z", "--deadline", "5h"], "does not cover a 1h job starting at 2026-04-10"),
])
def test_plan_refuses_bad_requests_with_one_line(tmp_path: Path, args: list[str], message: str):
    defaults = {"--trace": grid(tmp_path, HOURLY), "--duration": "1h", "--earliest": "2026-03-10T00:00Z",
                "--deadline": "2026-03-10T05:00Z"}
    defaults.update(dict(zip(args[::2], args[1::2])))
    result = plan(*[item for pair in defaults.items() for item in pair])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_plan_names_the_file_row_and_value_of_a_bad_trace(tmp_path: Path):
    bad = grid(tmp_path, HOURLY.replace("50", "fifty"))
    result = plan("--trace", bad, "--duration", "1h", "--earliest", "2026-03-10T00:00Z", "--deadline", "5h")
    assert result.exit_code == 2
    assert f"{bad}, line 5: intensity 'fifty' is not a number (gCO2/kWh)" in result.output


def test_backtest_prints_the_savings_as_json():
    result = runner.invoke(app, ["carbon", "backtest", "--trace", str(WINDY_GRID), "--duration", "1h", "--slack", "8h",
                                 "--every", "24h", "--forecast", "noisy:0.05"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["jobs"] == summary["deadlines_met"] == 350
    assert 0 < summary["savings_vs_run_now"] <= summary["savings_bound"]
    assert summary["forecast"] == "noisy:0.05" and summary["guard"] is True and "job_records" not in summary


def test_backtest_defaults_to_the_past_forecaster_and_can_list_jobs(tmp_path: Path):
    short = tmp_path / "month.csv"
    lines = gzip.decompress(WINDY_GRID.read_bytes()).decode().splitlines()[:24 * 30 + 1]
    short.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["carbon", "backtest", "--trace", str(short), "--jobs", "--every", "12h"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["forecast"] == "past" and summary["duration"] == "1h" and summary["slack"] == "8h"
    assert len(summary["job_records"]) == summary["jobs"] == 32  # days 14 to 29 of 30, twice a day


@pytest.mark.parametrize(("args", "message"), [
    (["--forecast", "oracle"], "The 'forecast' parameter of backtest must be one of past, perfect, noisy:SIGMA"),
    (["--every", "90m"], "every (90m) must be a multiple of the trace's resolution (1h)"),
    (["--slack", "eight hours"], "--slack: 'eight hours' is not a duration"),
])
def test_backtest_refuses_bad_options_with_one_line(args: list[str], message: str):
    result = runner.invoke(app, ["carbon", "backtest", "--trace", str(WINDY_GRID), *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_backtest_names_the_file_of_a_bad_trace(tmp_path: Path):
    bad = grid(tmp_path, "t,v\n2026-03-10T00:00Z,1\n2026-03-10T00:01Z,2\n2026-03-10T00:02Z,3\n")
    result = runner.invoke(app, ["carbon", "backtest", "--trace", bad])
    assert result.exit_code == 2 and f"{bad}: the resolution (the most common gap between rows) is 1m" in result.output
