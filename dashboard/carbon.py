"""The Carbon page: energy and emissions of every action, savings against running at once, intensity, GPU load.

Who calls it: :mod:`dashboard.app`, as the page "Carbon". It changes nothing,
so every role sees all of it. Every number comes from
:mod:`knowledge.carbon_ledger` (sums and downsampled series computed in SQL);
the time range ends at the knowledge base's latest activity, not the wall
clock, so a replayed or stopped controller still shows its last days. The
range is kept in the address (``?page=Carbon&range=7d``).

The intensity chart draws the Monitor's ``carbon.intensity`` observations;
with a ``series`` provider (a local trace file) the trace too, as far as
the forecast horizon past the range: a trace is the provider's own forecast.
Providers behind an API are never called from the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st
from sqlmodel import Session

from dashboard.context import PageContext
from knowledge import carbon_ledger as ledger
from mape.access import Identity
from mape.config import CarbonConfig
from mape.errors import DataSourceError
from mape.monitor.carbon import SeriesProvider

#: The ranges offered, by their name in the address.
RANGES = {"24h": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}
_RANGE_NAMES = {"24h": "last 24 hours", "7d": "last 7 days", "30d": "last 30 days"}
_DEFAULT_RANGE = "7d"
_TIME = alt.X("time:T", title="time (UTC)", scale=alt.Scale(type="utc"))


def render(session: Session, identity: Identity, context: PageContext) -> None:
    st.title("Carbon and resources")
    name = _range_name()
    latest = ledger.latest_activity(session)
    until = (latest or datetime.now(timezone.utc)) + timedelta(seconds=1)
    since = until - RANGES[name]
    if latest is None:
        st.info("No data yet: no action run has finished and no carbon intensity has been observed.")
    else:
        st.caption(f"{_RANGE_NAMES[name]} up to the latest activity, {latest:%Y-%m-%d %H:%M} UTC")
    _actions(session, since, until)
    _intensity(session, since, until, context.settings.carbon)
    _forecast_against_actual(session, since, until)
    _gpus(session, since, until)


def _range_name() -> str:
    """The range the address names (``range=7d``), kept there when changed; a name it does not know is said so."""
    if "carbon_range" not in st.session_state:
        asked = st.query_params.get("range", _DEFAULT_RANGE)
        if asked not in RANGES:
            st.warning(f"range {asked!r} in the address is not one of {', '.join(RANGES)}; showing "
                       f"{_RANGE_NAMES[_DEFAULT_RANGE]}.")
            asked = _DEFAULT_RANGE
        st.session_state["carbon_range"] = asked
    name = st.radio("Time range", list(RANGES), key="carbon_range", horizontal=True,
                    format_func=_RANGE_NAMES.__getitem__)
    st.query_params["range"] = name
    return name


# --------------------------------------------------------------------------- actions


def _actions(session: Session, since: datetime, until: datetime) -> None:
    st.header("Energy and emissions of actions")
    rows = ledger.emissions_by_action(session, since, until)
    if not rows:
        st.info("No action run finished in this range: no energy or emissions to show.")
        return
    everything = ledger.total(rows)
    runs, energy, emitted, saved = st.columns(4)
    runs.metric("Action runs finished", everything.runs)
    energy.metric("Energy measured", f"{everything.energy_kwh:.3g} kWh")
    emitted.metric("Emissions", mass(everything.emissions_kg))
    saved.metric("Saved against running at once", mass(everything.saved_kg) if everything.compared else "-",
                 delta=f"{everything.saved_fraction:.1%}" if everything.saved_fraction is not None else None)
    st.write(savings_text(everything))
    buckets = ledger.emissions_over_time(session, since, until)
    if buckets:
        frame = pd.DataFrame([{"time": b.start, "action": b.action, "emissions (g)": b.emissions_kg * 1000,
                               "energy (kWh)": b.energy_kwh, "runs": b.runs} for b in buckets])
        st.altair_chart(alt.Chart(frame, title="Emissions of the runs finished, per action kind").mark_bar().encode(
            _TIME, alt.Y("sum(emissions (g)):Q", title="gCO2e"), alt.Color("action:N"),
            tooltip=["time:T", "action:N", "runs:Q", "energy (kWh):Q", "emissions (g):Q"]), width="stretch")
    compared = [r for r in rows if r.compared]
    if compared:
        frame = pd.DataFrame([{"action": r.action, "estimate": what, "g": kg * 1000}
                              for r in compared for what, kg in (("run-now forecast", r.run_now_kg),
                                                                 ("chosen-window forecast", r.chosen_kg),
                                                                 ("realised", r.realised_kg))])
        st.altair_chart(alt.Chart(frame, title="Deferred runs: forecast for running at once, for the window "
                                               "chosen, and realised").mark_bar().encode(
            alt.X("g:Q", title="gCO2e"), alt.Y("estimate:N", title=None, sort=None), alt.Row("action:N"),
            alt.Color("estimate:N", legend=None), tooltip=["action:N", "estimate:N", "g:Q"]))


def savings_text(row: ledger.ActionEmissions) -> str:
    """What deferral saved, said honestly: on which runs, and how many lacked the numbers to say."""
    unmetered, uncompared = row.runs - row.metered, row.metered - row.compared
    gaps = []
    if uncompared:
        gaps.append(f"{_runs(uncompared)} with energy measured but no run-now forecast (its policy does not defer, "
                    f"or no forecast was known) {'counts' if uncompared == 1 else 'count'} in the totals only")
    if unmetered:
        gaps.append(f"{_runs(unmetered)} had no energy measured")
    tail = (" " + "; ".join(gaps) + ".") if gaps else ""
    if not row.compared:
        return f"No run has both a run-now forecast and measured emissions, so no saving can be said.{tail}"
    fraction = row.saved_fraction
    share = f" ({abs(fraction):.1%} of the {mass(row.run_now_kg)} forecast for running at once)" \
        if fraction is not None else ""
    verb = "saved" if row.saved_kg >= 0 else "cost"
    return (f"Deferral {verb} **{mass(abs(row.saved_kg))}**{share} on the {_runs(row.compared)} with both a "
            f"run-now forecast and measured emissions (realised {mass(row.realised_kg)}; the chosen windows' "
            f"forecast was {mass(row.chosen_kg)}).{tail}")


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def mass(kg: float) -> str:
    """A mass of CO2e in the unit that reads best: ``150 g``, ``2.5 kg``, ``1.2 t``.

    >>> mass(0.15), mass(2.5), mass(1234.0), mass(0.0042)
    ('150 g', '2.5 kg', '1.23 t', '4.2 g')
    """
    if abs(kg) < 1:
        return f"{kg * 1000:.3g} g"
    if abs(kg) < 1000:
        return f"{kg:.3g} kg"
    return f"{kg / 1000:.3g} t"


# --------------------------------------------------------------------------- intensity


def _intensity(session: Session, since: datetime, until: datetime, carbon: CarbonConfig | None) -> None:
    st.header("Grid carbon intensity and deferral windows")
    observed = ledger.intensity_series(session, since, until)
    windows = ledger.deferral_windows(session, since, until)
    trace, note = _trace(carbon, since, until)
    st.caption(note)
    if not observed and not trace:
        st.info("No carbon intensity observed in this range (the Monitor writes carbon.intensity when carbon is "
                "configured).")
        return
    lines = pd.DataFrame([{"time": p.time, "gCO2/kWh": p.mean, "low": p.low, "high": p.high,
                           "series": "observed"} for p in observed]
                         + [{"time": t, "gCO2/kWh": g, "low": g, "high": g, "series": "trace (forecast)"}
                            for t, g in trace])
    layers: list[alt.Chart] = [
        alt.Chart(lines).mark_line(interpolate="step-after").encode(
            _TIME, alt.Y("gCO2/kWh:Q"), alt.Color("series:N", scale=alt.Scale(range=["#1f77b4", "#999999"])),
            tooltip=["time:T", "series:N", "gCO2/kWh:Q", "low:Q", "high:Q"])]
    if windows:
        shaded = pd.DataFrame([{"time": w.chosen_start, "end": w.chosen_end, "action": w.action,
                                "decision": w.decision_id, "run now": w.run_now_start, "state": w.state or "no run"}
                               for w in windows])
        layers.insert(0, alt.Chart(shaded).mark_rect(opacity=0.25, color="#2ca02c").encode(
            _TIME, x2="end:T", tooltip=["decision:Q", "action:N", "run now:T", "time:T", "end:T", "state:N"]))
        layers.append(alt.Chart(shaded).mark_rule(strokeDash=[4, 3], color="#d62728").encode(
            alt.X("run now:T", scale=alt.Scale(type="utc")), tooltip=["decision:Q", "action:N", "run now:T"]))
    st.altair_chart(alt.layer(*layers, title="Intensity; green: windows chosen for deferred runs; dashed red: when "
                                             "they would have started at once").interactive(bind_y=False),
                    width="stretch")
    if not windows:
        st.caption("No run was deferred in this range.")
    else:
        st.caption(f"{len(windows)} deferred decisions in this range" + (" (the newest 200)" if len(windows) == 200
                                                                           else "") + ".")


def _trace(carbon: CarbonConfig | None, since: datetime, until: datetime) -> tuple[list[tuple[datetime, float]], str]:
    """The configured trace over the range and the forecast horizon past it (at most 500 points), and a note."""
    if carbon is None:
        return [], "No carbon provider is configured: the chart shows the stored observations only."
    if carbon.provider != "series" or carbon.path is None:
        return [], (f"The {carbon.provider} provider is not a local file, so the page does not ask it: the chart shows "
                    "the stored observations only.")
    path = Path(carbon.path)
    try:
        provider = _series_provider(str(path), carbon.repeat, path.stat().st_mtime)
    except (OSError, DataSourceError) as exc:
        return [], f"The carbon trace {path} cannot be read: {exc}"
    end = until + carbon.horizon
    points = provider.forecast(since, end)
    if not points:
        return [], (f"The carbon trace {path.name} has no values from {since:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} "
                    "UTC (set carbon.repeat to repeat it): the chart shows the stored observations only.")
    return (_thinned([(max(p.time, since), p.g_per_kwh) for p in points], since, end, 500),
            f"Grey: the trace {path.name} (the series provider's forecast, perfect by construction) up to "
            f"{carbon.horizon} past the range.")


@st.cache_resource(max_entries=4)
def _series_provider(path: str, repeat: bool, modified: float) -> SeriesProvider:
    """The trace, read once per version of the file (about 0.1 s for the shipped year of half-hours)."""
    return SeriesProvider(path, repeat=repeat)


def _thinned(points: Sequence[tuple[datetime, float]], since: datetime, until: datetime,
             most: int) -> list[tuple[datetime, float]]:
    """Step points averaged into at most ``most`` buckets of equal width (the trace file is not in SQL)."""
    if len(points) <= most:
        return list(points)
    width = ledger.bucket_seconds(since, until, most)
    sums: dict[int, list[float]] = {}
    for time, value in points:
        sums.setdefault(int((time - since).total_seconds()) // width, []).append(value)
    return [(since + timedelta(seconds=k * width), sum(v) / len(v)) for k, v in sorted(sums.items())]


# --------------------------------------------------------------------------- forecast against actual


def _forecast_against_actual(session: Session, since: datetime, until: datetime) -> None:
    counts, scores = ledger.shadow_scores(session, since, until)
    if not counts:
        return  # no policy defers on a forecast: nothing to judge it by
    st.header("Forecast against actual")
    st.write(f"Shadow searches issued in this range: {counts.get('scored', 0)} scored, {counts.get('pending', 0)} "
             f"pending, {counts.get('unscorable', 0)} without actuals. A search above the line promised more than "
             "the actual series gave.")
    if not scores:
        return
    frame = pd.DataFrame([{"predicted gain": s.predicted_gain, "realised gain": s.realised_gain, "key": s.key,
                           "time": s.issued_at} for s in scores])
    low = min(frame["predicted gain"].min(), frame["realised gain"].min())
    high = max(frame["predicted gain"].max(), frame["realised gain"].max())
    diagonal = pd.DataFrame({"predicted gain": [low, high], "realised gain": [low, high]})
    st.altair_chart(alt.layer(
        alt.Chart(diagonal).mark_line(color="#999999", strokeDash=[4, 3]).encode(
            alt.X("realised gain:Q"), alt.Y("predicted gain:Q")),
        alt.Chart(frame).mark_circle(size=40).encode(
            alt.X("realised gain:Q", title="realised gain (gCO2/kWh)"),
            alt.Y("predicted gain:Q", title="predicted gain (gCO2/kWh)"), alt.Color("key:N"),
            tooltip=["time:T", "key:N", "predicted gain:Q", "realised gain:Q"]),
        title="What deferring promised against what it gave, per scored shadow search"), width="stretch")


# --------------------------------------------------------------------------- GPUs


def _gpus(session: Session, since: datetime, until: datetime) -> None:
    st.header("GPU utilization per device")
    usage = ledger.gpu_usage(session, since, until)
    devices = usage.devices
    if not devices:
        st.info("No GPU readings in this range (models with a gpu sensor write gpu.device.* observations).")
        return
    st.write("Devices: " + ", ".join(f"**{d.device}**" for d in devices))
    st.dataframe(pd.DataFrame([{"device": d.device, "readings": d.readings, "mean utilization": d.mean_utilization,
                                "peak utilization": d.peak_utilization, "peak memory used": d.peak_memory_fraction,
                                "last seen (UTC)": d.last_seen} for d in devices]),
                 hide_index=True, column_config={name: st.column_config.ProgressColumn(name, min_value=0, max_value=1,
                                                                                       format="percent")
                                                 for name in ("mean utilization", "peak utilization",
                                                              "peak memory used")})
    series = usage.series
    titles = {"utilization": "Utilization (share of time a kernel ran)", "memory_used_fraction": "Memory used"}
    for field, title in titles.items():
        frame = pd.DataFrame([{"time": p.time, "device": p.device, "mean": p.mean, "peak": p.high}
                              for p in series if p.field == field])
        if frame.empty:
            st.caption(f"{title}: no device reports it (NVML gives no utilization for MIG instances).")
            continue
        st.altair_chart(alt.Chart(frame, title=title).mark_line().encode(
            _TIME, alt.Y("mean:Q", title=None, axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
            alt.Color("device:N"), tooltip=["time:T", "device:N", alt.Tooltip("mean:Q", format=".0%"),
                                            alt.Tooltip("peak:Q", format=".0%")]), width="stretch")
