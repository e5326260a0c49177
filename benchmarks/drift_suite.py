"""The drift suite: speed on 100k x 50 and 1M x 10, false alarms and power (issue 4).

Speed. Two all-numeric tables of standard normal features, reference and
current of the same size, 100,000 rows x 50 features and 1,000,000 rows x 10
features. The drift sensor is fitted once (sorting each reference, its
quantile bins and spread; reported as ``fit_s``), scored once cold
(``first_score_s``) and then five times more for the default sensor and the
full suite, three times for the variants (the median is
``score_median_s``):

- ``sensor_ks_wasserstein``: the default sensor (KS per feature, Wasserstein
  effect size, Benjamini-Hochberg, the effect floor), what a Monitor tick runs;
- ``sensor_ks_psi``, ``sensor_ks_js``, ``sensor_cvm_wasserstein``: the same
  with the other effect sizes, and with Cramér-von Mises instead of KS;
- ``full_suite``: KS, Wasserstein, PSI and Jensen-Shannon on every feature and
  the correction, from the same fitted reference (one sort and one merge per
  feature feed them all);
- ``sensor_mixed``: the default sensor on the same table with a tenth of the
  columns categorical (8 string categories: chi-squared and Jensen-Shannon);
- ``sensor_ks_wasserstein_all_shifted``: the default sensor when every
  feature moved by 0.05 sigma (median of 2 after the cold run), against
  scipy's ``ks_2samp`` on the same shifted data (one run): significant
  features are where scipy's asymptotic KS p-value is slowest.

Baselines, measured in the same run on the same data: scipy's ``ks_2samp``
and scipy's ``wasserstein_distance`` per feature (median of 3 runs; one run
of ``wasserstein_distance`` on 1M x 10, which takes 6 to 9 s), and
alibi-detect's ``TabularDrift`` (KS per feature and the FDR correction: what
our sensor does, without the effect sizes; median of 3 runs, and one run on
the shifted table). alibi-detect needs numpy < 2, so ``TabularDrift`` runs in
a subprocess with the Python of ``.venv-alibi`` (``make test-alibi`` builds
it; ``MAPE_ALIBI_PYTHON`` names another) on the same arrays, written to
``.npy`` files (:mod:`benchmarks.alibi_tabular`); without that environment
the result says it is not available. The ratios (``speedup_over_...``) are
baseline time over the median of ours.

Quality, of the default sensor (alpha 0.05, default floors):

- false alarms: 50 clean features, 5,000 rows per window, 400 checks; the
  share of checks with any drifted feature, with any significant one (BH
  alone) and with any raw p < 0.05 (no correction);
- the negligible shift: one feature shifted by 0.02 sigma, 1,000,000 rows per
  window, 20 checks; the share called drifted (with the floor) and
  significant (what the test alone would flag);
- power: one of 50 features shifted by 0.5 sigma, 5,000 rows, 400 checks; the
  share of checks finding it and the share flagging another feature.

Results go to ``benchmarks/results/drift_suite.json`` with the machine's
description and its load average at the start (the machine's two cores may be
shared with other work).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from benchmarks.machine import describe, write_results
from mape.config import FeaturesConfig
from mape.monitor.detectors import KSDetector
from mape.monitor.detectors._pooled import Pooled
from mape.monitor.detectors.effect_size import bin_counts, jensen_shannon, psi, scaled
from mape.monitor.multiple_testing import benjamini_hochberg
from mape.monitor.sensors import DriftSensor

CATEGORIES = np.array([f"c{i}" for i in range(8)], dtype=object)

#: The Python of the environment with alibi-detect (numpy 1.26) that ``make test-alibi`` builds.
ALIBI_PYTHON = Path(__file__).resolve().parent.parent / ".venv-alibi" / "bin" / "python"
ALIBI_MISSING = "not available (make test-alibi builds .venv-alibi)"


def _timed(action: Callable[[], Any], repeat: int) -> dict[str, float]:
    """The first (cold) run, then the median of ``repeat`` more."""
    began = time.perf_counter()
    action()
    first = time.perf_counter() - began
    return {"first_score_s": round(first, 3), "score_median_s": round(_median_time(action, repeat), 3)}


def _median_time(action: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        action()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _numeric_table(rng: np.random.Generator, rows: int, columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rng.normal(size=(rows, len(columns))), columns=columns)


def _full_suite(detectors: dict[str, KSDetector], frame: pd.DataFrame) -> np.ndarray:
    """KS p-value, Wasserstein, PSI and Jensen-Shannon of every feature, then Benjamini-Hochberg."""
    p_values, effects = [], []
    for name, detector in detectors.items():
        current = np.sort(frame[name].to_numpy(dtype=float))
        n, m = detector.n_reference_, current.size
        pooled = Pooled(detector.reference_, current)
        p_values.append(stats.kstwo.sf(pooled.ks(), round(n * m / (n + m))))
        counts = bin_counts(current, detector.edges_, assume_sorted=True)
        effects.append((scaled(pooled.wasserstein(), detector.spread_),
                        psi(detector.reference_bin_counts_, counts),
                        jensen_shannon(detector.reference_bin_counts_, counts)))
    return benjamini_hochberg(p_values)


def speed(rows: int, n_features: int, *, repeat: int = 5, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    columns = [f"x{i:02d}" for i in range(n_features)]
    features = FeaturesConfig(numeric=columns)
    reference, current = _numeric_table(rng, rows, columns), _numeric_table(rng, rows, columns)
    result: dict[str, Any] = {"rows": rows, "features": n_features, "repeat": repeat}
    # warm-up, untimed: the first sensor of a process also pays for growing its heap (about 0.1 s on 1M x 10,
    # however often it is scored); a controller's heap is warm after its first tick
    DriftSensor(features, numeric_effect="psi").fit(reference).score(current)

    configurations = {
        "sensor_ks_wasserstein": {},
        "sensor_ks_psi": {"numeric_effect": "psi"},
        "sensor_ks_js": {"numeric_effect": "js"},
        "sensor_cvm_wasserstein": {"numeric_test": "cvm"},
    }
    for name, options in configurations.items():
        began = time.perf_counter()
        sensor = DriftSensor(features, **options).fit(reference)
        fit_s = time.perf_counter() - began
        variant_repeat = repeat if name == "sensor_ks_wasserstein" else 3
        result[name] = {"fit_s": round(fit_s, 3), "repeat": variant_repeat,
                        **_timed(lambda: sensor.score(current), variant_repeat)}
        if name == "sensor_ks_wasserstein":
            result["full_suite"] = _timed(lambda: _full_suite(sensor.detectors_, current), repeat)  # type: ignore[arg-type]

    n_categorical = max(1, n_features // 10)
    mixed = FeaturesConfig(numeric=columns[n_categorical:], categorical=columns[:n_categorical])
    mixed_reference, mixed_current = reference.copy(), current.copy()
    for column in mixed.categorical:
        mixed_reference[column] = rng.choice(CATEGORIES, size=rows)
        mixed_current[column] = rng.choice(CATEGORIES, size=rows)
    began = time.perf_counter()
    sensor = DriftSensor(mixed).fit(mixed_reference)
    result["sensor_mixed"] = {"categorical_features": n_categorical, "fit_s": round(time.perf_counter() - began, 3),
                              "repeat": 3, **_timed(lambda: sensor.score(mixed_current), 3)}

    ref_values = {c: reference[c].to_numpy() for c in columns}
    cur_values = {c: current[c].to_numpy() for c in columns}
    ks_s = _median_time(lambda: [stats.ks_2samp(ref_values[c], cur_values[c]) for c in columns], 3)
    wasserstein_repeat = 3 if rows * n_features <= 5_000_000 else 1  # 6 to 9 s a run on 1M x 10
    wasserstein_s = _median_time(lambda: [stats.wasserstein_distance(ref_values[c], cur_values[c]) for c in columns],
                                 wasserstein_repeat)
    result["baseline_repeat"] = {"ks_2samp": 3, "wasserstein_distance": wasserstein_repeat}
    ours = result["sensor_ks_wasserstein"]["score_median_s"]

    # every feature shifted by 0.05 sigma: significant everywhere, where scipy's KS p-value is slowest
    shifted = current + 0.05
    sensor = DriftSensor(features).fit(reference)
    result["sensor_ks_wasserstein_all_shifted"] = _timed(lambda: sensor.score(shifted), 2)
    shifted_values = {c: shifted[c].to_numpy() for c in columns}
    shifted_ks_s = _median_time(lambda: [stats.ks_2samp(ref_values[c], shifted_values[c]) for c in columns], 1)
    result["baseline_scipy_ks_2samp_all_shifted_s"] = round(shifted_ks_s, 3)
    result["all_shifted_speedup_over_scipy_ks"] = round(
        shifted_ks_s / result["sensor_ks_wasserstein_all_shifted"]["score_median_s"], 2)

    alibi = alibi_tabular_drift(reference, current, shifted)
    result["baseline_alibi_tabular_drift"] = alibi
    if "score_median_s" in alibi:
        result["speedup_over_alibi_tabular_drift"] = round(alibi["score_median_s"] / ours, 2)
        result["full_suite_speedup_over_alibi_tabular_drift"] = round(
            alibi["score_median_s"] / result["full_suite"]["score_median_s"], 2)
        result["all_shifted_speedup_over_alibi_tabular_drift"] = round(
            alibi["all_shifted_score_s"] / result["sensor_ks_wasserstein_all_shifted"]["score_median_s"], 2)

    result["baseline_scipy_ks_2samp_s"] = round(ks_s, 3)
    result["baseline_scipy_wasserstein_distance_s"] = round(wasserstein_s, 3)
    result["baseline_scipy_ks_plus_wasserstein_s"] = round(ks_s + wasserstein_s, 3)
    result["speedup_over_scipy_ks"] = round(ks_s / ours, 2)
    result["speedup_over_scipy_ks_plus_wasserstein"] = round((ks_s + wasserstein_s) / ours, 2)
    result["full_suite_speedup_over_scipy_ks_plus_wasserstein"] = round(
        (ks_s + wasserstein_s) / result["full_suite"]["score_median_s"], 2)
    return result


def alibi_tabular_drift(reference: pd.DataFrame, current: pd.DataFrame, shifted: pd.DataFrame,
                        repeat: int = 3) -> dict[str, Any]:
    """alibi-detect's ``TabularDrift`` on the same tables, timed by :mod:`benchmarks.alibi_tabular` in .venv-alibi."""
    python = Path(os.environ.get("MAPE_ALIBI_PYTHON", ALIBI_PYTHON))
    if not python.exists():
        return {"status": ALIBI_MISSING}
    with tempfile.TemporaryDirectory(prefix="mape-drift-suite-") as directory:
        for name, frame in (("reference", reference), ("current", current), ("shifted", shifted)):
            np.save(Path(directory) / f"{name}.npy", frame.to_numpy(dtype=float))
        script = Path(__file__).with_name("alibi_tabular.py")
        done = subprocess.run([str(python), str(script), directory, str(repeat)], capture_output=True, text=True,
                              timeout=1800)
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit status {done.returncode}"
        return {"status": f"failed: {last}"}
    return {"python": str(python), **json.loads(done.stdout.strip().splitlines()[-1])}


def false_alarms(checks: int = 400, rows: int = 5000, n_features: int = 50, seed: int = 1) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    columns = [f"x{i:02d}" for i in range(n_features)]
    features = FeaturesConfig(numeric=columns)
    drifted = significant = uncorrected = 0
    began = time.perf_counter()
    for _ in range(checks):
        report = DriftSensor(features).fit(_numeric_table(rng, rows, columns)).score(_numeric_table(rng, rows, columns))
        drifted += bool(report.detected)
        significant += any(f.significant for f in report.features)
        uncorrected += any(f.p_value < 0.05 for f in report.features)
    return {"checks": checks, "rows": rows, "features": n_features,
            "any_drifted_share": drifted / checks, "any_significant_share": significant / checks,
            "any_uncorrected_p_below_alpha_share": uncorrected / checks,
            "binomial_sd_at_5_percent": round(float(np.sqrt(0.05 * 0.95 / checks)), 4),
            "seconds": round(time.perf_counter() - began, 1)}


def negligible_shift(checks: int = 20, rows: int = 1_000_000, shift: float = 0.02, seed: int = 2) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    features = FeaturesConfig(numeric=["x"])
    drifted = significant = 0
    effects = []
    began = time.perf_counter()
    for _ in range(checks):
        sensor = DriftSensor(features).fit(pd.DataFrame({"x": rng.normal(size=rows)}))
        (feature,) = sensor.score(pd.DataFrame({"x": rng.normal(shift, 1.0, size=rows)})).features
        drifted += feature.drifted
        significant += feature.significant
        effects.append(feature.effect_size)
    return {"checks": checks, "rows": rows, "shift_sigma": shift, "drifted_share": drifted / checks,
            "significant_share_test_alone": significant / checks,
            "wasserstein_effect_median": round(statistics.median(effects), 4),
            "wasserstein_effect_max": round(max(effects), 4), "floor": 0.1,
            "seconds": round(time.perf_counter() - began, 1)}


def power(checks: int = 400, rows: int = 5000, n_features: int = 50, shift: float = 0.5, seed: int = 3) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    columns = [f"x{i:02d}" for i in range(n_features)]
    features = FeaturesConfig(numeric=columns)
    target = columns[n_features // 3]
    found = other = 0
    began = time.perf_counter()
    for _ in range(checks):
        current = _numeric_table(rng, rows, columns)
        current[target] += shift
        report = DriftSensor(features).fit(_numeric_table(rng, rows, columns)).score(current)
        flagged = {f.feature for f in report.features if f.drifted}
        found += target in flagged
        other += bool(flagged - {target})
    return {"checks": checks, "rows": rows, "features": n_features, "shift_sigma": shift,
            "detected_share": found / checks, "other_feature_flagged_share": other / checks,
            "seconds": round(time.perf_counter() - began, 1)}


def measure() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    began = time.perf_counter()
    results = {
        "machine": describe(), "load_average_at_start": [round(x, 2) for x in load] if load else None,
        "speed": [speed(100_000, 50), speed(1_000_000, 10)],
        "target_score_s": 1.0,
        "false_alarms": false_alarms(),
        "negligible_shift": negligible_shift(),
        "power": power(),
    }
    results["total_seconds"] = round(time.perf_counter() - began, 1)
    return results


def main() -> None:
    write_results("drift_suite", measure())


if __name__ == "__main__":
    main()
