"""Streaming drift detectors on streams with known change points, and the MMD detector at 100k + 100k rows (issue 4).

Streams: 5,000 values from N(0, 1), then 5,000 from the changed distribution:
a mean shift of 0.5, 1 or 2 standard deviations, or a variance change
(standard deviation 1 → 2); 50 seeds each. A stationary scenario (20,000
values of N(0, 1), 50 seeds) measures false alarms alone.

Detectors, all configured for an expected run length of 10,000 samples
between false alarms (``for_run_length(10_000)``; CUSUM and Page-Hinkley
tuned to a 1-sigma shift, ``k = delta = 0.5``), with their default warm-up of
500 values to estimate the mean and sigma (re-estimated after each alarm by
CUSUM and Page-Hinkley). "CUSUM (known mean, sigma)" is the same CUSUM given
the true parameters: the reference for Siegmund's run lengths.

Measured per detector and scenario: detections (a first alarm at or after the
change, within 5,000 values), the median and mean detection delay over the
streams with one, and false alarms per 10,000 in-control values (alarms
before the change). ADWIN's ``delta`` sweep shows how loose the bound behind
``ADWIN.for_run_length`` is on Gaussian data. river (a benchmark-only
dependency) is compared when installed, with its default parameters.

MMD: fit and score of :class:`~mape.monitor.detectors.mmd.MMDDetector` with
its defaults on 100,000 + 100,000 rows of 20 features (feature 0 of the
current rows shifted by 0, 0.1 and 0.5 sigma), each in a fresh subprocess:
seconds and peak resident memory (``ru_maxrss``), beside a subprocess that
only imports the same modules and builds the data. The load average before
and after is recorded: torch's threads slow down several times when other
work keeps the cores busy.

Results go to ``benchmarks/results/online_detectors.json`` with the machine's description.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import describe, write_results
from mape.monitor.online import ADWIN, CUSUM, PageHinkley, siegmund_arl

ARL0 = 10_000
SEEDS = 50
CHANGE = 5_000
AFTER = 5_000
STATIONARY = 20_000

#: Scenario name → (mean, standard deviation) after the change.
SCENARIOS: dict[str, tuple[float, float]] = {
    "mean +0.5 sigma": (0.5, 1.0),
    "mean +1 sigma": (1.0, 1.0),
    "mean +2 sigma": (2.0, 1.0),
    "sigma x2": (0.0, 2.0),
}

ROOT = Path(__file__).resolve().parents[1]


class _River:
    """A river detector behind our ``update(x).drift_detected`` shape."""

    def __init__(self, detector: Any) -> None:
        self.detector = detector

    def update(self, x: float) -> _River:
        self.detector.update(x)
        return self

    @property
    def drift_detected(self) -> bool:
        return bool(self.detector.drift_detected)


def detectors() -> dict[str, Callable[[], Any]]:
    return {
        "CUSUM": lambda: CUSUM.for_run_length(ARL0, shift=1.0),
        "CUSUM (known mean, sigma)": lambda: CUSUM.for_run_length(ARL0, shift=1.0, mean=0.0, sigma=1.0),
        "PageHinkley": lambda: PageHinkley.for_run_length(ARL0, shift=1.0),
        "ADWIN": lambda: ADWIN.for_run_length(ARL0),
    }


def river_detectors() -> tuple[dict[str, Callable[[], Any]], str]:
    """river's PageHinkley and ADWIN with their defaults, or none and why."""
    try:
        from river import __version__ as version
        from river import drift
    except ImportError:
        return {}, "not installed (pip install river)"
    return {
        "river PageHinkley (defaults)": lambda: _River(drift.PageHinkley()),
        "river ADWIN (defaults)": lambda: _River(drift.ADWIN()),
    }, f"river {version}"


def _alarms(detector: Any, values: list[float]) -> list[int]:
    found = []
    for i, x in enumerate(values):
        if detector.update(x).drift_detected:
            found.append(i)
    return found


def _stream(seed: int, mean: float, sigma: float) -> list[float]:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0.0, 1.0, CHANGE), rng.normal(mean, sigma, AFTER)]).tolist()


def change_scenario(make: Callable[[], Any], mean: float, sigma: float) -> dict[str, Any]:
    delays, false_alarms = [], 0
    for seed in range(SEEDS):
        alarms = _alarms(make(), _stream(seed, mean, sigma))
        false_alarms += sum(i < CHANGE for i in alarms)
        late = [i - CHANGE for i in alarms if i >= CHANGE]
        if late:
            delays.append(late[0])
    return {
        "detected": f"{len(delays)}/{SEEDS}",
        "median_delay": float(statistics.median(delays)) if delays else None,
        "mean_delay": round(statistics.fmean(delays), 1) if delays else None,
        "false_alarms_per_10k": round(false_alarms / (SEEDS * CHANGE) * 1e4, 2),
    }


def stationary(make: Callable[[], Any], seeds: int = SEEDS) -> dict[str, Any]:
    alarms, quiet, first_10k = 0, 0, 0
    began = time.perf_counter()
    for seed in range(seeds):
        found = _alarms(make(), np.random.default_rng(10_000 + seed).normal(size=STATIONARY).tolist())
        alarms += len(found)
        quiet += not any(i < 10_000 for i in found)
    elapsed = time.perf_counter() - began
    return {
        "false_alarms_per_10k": round(alarms / (seeds * STATIONARY) * 1e4, 2),
        "streams_without_alarm_in_first_10k": f"{quiet}/{seeds}",
        "us_per_update": round(elapsed / (seeds * STATIONARY) * 1e6, 2),
    }


def measure_streams() -> dict[str, Any]:
    makers = detectors()
    extra, river = river_detectors()
    makers.update(extra)
    results: dict[str, Any] = {}
    for name, make in makers.items():
        print(f"  {name}", flush=True)
        results[name] = {"stationary": stationary(make)} | {
            scenario: change_scenario(make, mean, sigma) for scenario, (mean, sigma) in SCENARIOS.items()}
    cusum = CUSUM.for_run_length(ARL0, shift=1.0)
    predicted = {f"mean +{shift:g} sigma": round(siegmund_arl(cusum.k, cusum.h, shift), 1) for shift in (0.5, 1, 2)}
    sweep = {}
    for delta in (32 / ARL0, 0.01, 0.03, 0.1, 0.3):
        sweep[f"{delta:g}"] = stationary(lambda delta=delta: ADWIN(delta=delta), seeds=20)["false_alarms_per_10k"]
    return {
        "settings": {
            "arl0": ARL0, "seeds": SEEDS, "change_at": CHANGE, "values_after_change": AFTER,
            "stationary_length": STATIONARY, "grace_period": CUSUM().grace_period,
            "cusum": {"k": cusum.k, "h": round(cusum.h, 4)},
            "page_hinkley": {"delta": 0.5, "threshold": round(cusum.h, 4)},
            "adwin": {"delta": ADWIN.for_run_length(ARL0).delta, "clock": 32},
        },
        "river": river,
        "siegmund_arl1_from_zero": {"cusum": predicted},
        "detectors": results,
        "adwin_false_alarms_per_10k_by_delta": sweep,
    }


_MMD_SCRIPT = """
import json, resource, time
import numpy as np
import torch
from mape.monitor.detectors import MMDDetector
torch.set_num_threads({threads})
rng = np.random.default_rng(0)
reference, current = rng.normal(size=(100_000, 20)), rng.normal(size=(100_000, 20))
current[:, 0] += {shift}
outcome = {{"torch_threads": torch.get_num_threads()}}
if {score}:
    began = time.perf_counter()
    detector = MMDDetector().fit(reference)
    outcome["fit_s"] = round(time.perf_counter() - began, 3)
    seconds = []
    for _ in range(3):
        began = time.perf_counter()
        result = detector.score(current)
        seconds.append(round(time.perf_counter() - began, 2))
    outcome |= {{"score_s_three_runs": seconds, "p_value": round(result.p_value, 4), "mmd2": result.statistic,
                 "bandwidth": round(result.bandwidth, 3)}}
outcome["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print(json.dumps(outcome))
"""


def _mmd_run(shift: float, *, score: bool = True, threads: int | None = None) -> dict[str, Any]:
    script = textwrap.dedent(_MMD_SCRIPT).format(shift=shift, score=score, threads=threads or os.cpu_count())
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def measure_mmd() -> dict[str, Any]:
    return {
        "data": "100,000 + 100,000 rows x 20 features, N(0, 1); feature 0 of the current rows shifted",
        "detector": "MMDDetector(): max_samples 5000 per side, 100 permutations, float64 tiles of 1024, CPU",
        "imports_and_data_only": _mmd_run(0.0, score=False),
        "fit_and_score": {f"shift {shift:g} sigma": _mmd_run(shift) for shift in (0.0, 0.1, 0.5)},
        "fit_and_score_one_torch_thread": {"shift 0.5 sigma": _mmd_run(0.5, threads=1)},
    }


def main() -> None:
    began = time.perf_counter()
    results: dict[str, Any] = {"machine": describe(), "load_average_before": [round(x, 2) for x in os.getloadavg()]}
    results["streams"] = measure_streams()
    results["mmd"] = measure_mmd()
    results["runtime_s"] = round(time.perf_counter() - began, 1)
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    write_results("online_detectors", results)


if __name__ == "__main__":
    main()
