"""Published electricity prices are the forecast of deferred actions that weigh price."""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlmodel import select

from knowledge.database import session_scope
from knowledge.tables import ActionRun
from mape.config import Settings
from mape.controller import Controller
from mape.plan import Planner
from mape.plan.scheduling.prices import PriceSeries
from tests.plan.helpers import add_model, make_policy, observe

T0 = datetime(2026, 3, 10, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)


def write_prices(path: Path, prices: list[float], *, start: datetime = T0) -> Path:
    rows = [f"{(start + i * HOUR).isoformat()},{price}" for i, price in enumerate(prices)]
    path.write_text("delivery_start,eur_per_mwh\n" + "\n".join(rows) + "\n")
    return path


def test_prices_are_steps_over_the_window_asked_for_negative_ones_included(tmp_path):
    prices = PriceSeries(write_prices(tmp_path / "day-ahead.csv", [90, 70, -12.5, 40]))

    got = prices.forecast(T0 + timedelta(minutes=30), T0 + 6 * HOUR)

    assert got == [(T0, 90.0), (T0 + HOUR, 70.0), (T0 + 2 * HOUR, -12.5), (T0 + 3 * HOUR, 40.0)]
    assert prices.error is None
    assert PriceSeries(tmp_path / "day-ahead.csv", repeat=True).forecast(T0 + 4 * HOUR, T0 + 6 * HOUR) == [
        (T0 + 4 * HOUR, 90.0), (T0 + 5 * HOUR, 70.0)]


def test_an_unreadable_file_gives_no_forecast_names_the_row_once_and_a_fixed_one_is_read_again(tmp_path, caplog):
    path = write_prices(tmp_path / "prices.csv", [90, 70])
    prices = PriceSeries(path)
    assert len(prices.forecast(T0, T0 + 2 * HOUR)) == 2
    path.write_text("time,price\n2026-03-10T00:00Z,80\n2026-03-10T01:00Z,cheap\n")
    os.utime(path, ns=(1, 2))  # a new stamp whatever the clock's resolution

    with caplog.at_level(logging.ERROR, logger="mape.plan.scheduling.prices"):
        assert prices.forecast(T0, T0 + 2 * HOUR) == []
        assert prices.forecast(T0, T0 + 2 * HOUR) == []
    assert prices.error is not None and str(path) in prices.error and "line 3" in prices.error
    assert "'cheap'" in prices.error
    assert len(caplog.records) == 1  # reported once for this version of the file

    write_prices(path, [50, 10, 30])
    assert prices.forecast(T0, T0 + 3 * HOUR)[1] == (T0 + HOUR, 10.0)
    assert prices.error is None


def test_a_missing_file_gives_no_forecast_and_says_which(tmp_path):
    prices = PriceSeries(tmp_path / "nowhere.csv")
    assert prices.forecast(T0, T0 + HOUR) == []
    assert prices.error is not None and "nowhere.csv" in prices.error


def _controller(tmp_path: Path, **settings: object) -> Controller:
    policies = tmp_path / "policies"
    policies.mkdir(exist_ok=True)
    return Controller(Settings(db_url=f"sqlite:///{tmp_path / 'kb.db'}", policies_dir=policies,
                               artifacts_dir=tmp_path / "artifacts", **settings))


def test_a_policy_minimising_price_starts_in_the_cheapest_window_the_controller_forecasts(tmp_path):
    write_prices(tmp_path / "prices.csv", [90, 80, 75, 20, -5, 60, 85, 95, 100, 100])
    controller = _controller(tmp_path, price={"path": str(tmp_path / "prices.csv")})
    try:
        forecast = controller._forecast()
        assert forecast is not None and forecast("carbon", T0, T0 + HOUR) == []  # no carbon configured
        policy = make_policy("cheap-retrain", action="retrain", when="drift.share_drifted > 0.3", cooldown=0,
                             defer={"earliest": "0s", "deadline": "8h", "duration": "2h", "objective": "price"})
        planner = Planner([policy], max_age=timedelta(minutes=30), forecast=forecast)
        with session_scope(controller.engine) as session:
            model = add_model(session, "m")
            observe(session, model, T0, drift__share_drifted=0.5)
            report = planner.plan(session, [model], T0)
            (decision,) = report.decisions["m"]
            chosen = decision.evidence["schedule"]
            controller.executor.dispatch(session, T0)
        with session_scope(controller.engine) as session:
            (run,) = session.exec(select(ActionRun)).all()
        assert run.state == "scheduled" and run.scheduled_for == T0 + 3 * HOUR  # 20 and -5: the cheapest two hours
        assert chosen["forecast"]["chosen"] == {"price": 7.5} and chosen["forecast"]["run_now"] == {"price": 85.0}
    finally:
        controller.engine.dispose()


def test_without_a_price_series_a_price_objective_starts_at_the_earliest_time(tmp_path):
    controller = _controller(tmp_path)
    try:
        assert controller._forecast() is None
    finally:
        controller.engine.dispose()


def test_the_price_section_is_checked_when_the_settings_load(tmp_path):
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="price.currency"):
        Settings(price={"path": str(tmp_path / "p.csv"), "currency": "EUR"})
