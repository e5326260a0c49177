"""Grid carbon intensity for the demo and the tests.

``diurnal-grid.csv`` is a synthetic trace (52 weeks from Monday 5 January
2026, every 30 minutes, gCO2/kWh) made by :mod:`mape.monitor.carbon.synthetic`:
a solar dip at midday, an evening peak, quieter weekends and seeded weather
noise. Read it with :class:`mape.monitor.carbon.series.SeriesProvider`, or
configure ``carbon: {provider: series, path: examples/carbon/diurnal-grid.csv}``.

``windy-grid.csv.gz`` is a synthetic year of a grid where wind moves the
intensity more than the hour of the day does (52 weeks from the same Monday,
hourly), made by :mod:`examples.carbon.windy_grid`: the trace of the
carbon-aware scheduling backtests (``mape carbon backtest``).
"""

from __future__ import annotations

from pathlib import Path

#: The shipped synthetic trace.
DIURNAL_GRID = Path(__file__).with_name("diurnal-grid.csv")
#: The shipped windy-grid trace (gzip-compressed CSV).
WINDY_GRID = Path(__file__).with_name("windy-grid.csv.gz")
