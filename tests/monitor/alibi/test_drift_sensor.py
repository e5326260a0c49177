"""DriftSensor with backend alibi, end to end: configured from settings, same report shape, same verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

pytest.importorskip("alibi_detect")

from examples.credit.demo import write_config  # noqa: E402
from mape.config import DriftConfig, FeaturesConfig, load_settings  # noqa: E402
from mape.monitor.detectors.alibi import AlibiChiSquareDetector, AlibiCVMDetector, AlibiKSDetector  # noqa: E402
from mape.monitor.sensors import DriftSensor  # noqa: E402

pytestmark = pytest.mark.alibi

FEATURES = FeaturesConfig(numeric=[f"x{i}" for i in range(6)], categorical=["c0", "c1"])


def window(rng: np.random.Generator, n: int, *, shift: dict[str, float] | None = None) -> pd.DataFrame:
    shift = shift or {}
    data = {name: rng.normal(shift.get(name, 0.0), 1.0, size=n) for name in FEATURES.numeric}
    for name in FEATURES.categorical:
        p = [0.3, 0.3, 0.4] if name in shift else [0.5, 0.3, 0.2]
        data[name] = rng.choice(np.array(["a", "b", "c"], dtype=object), size=n, p=p)
    return pd.DataFrame(data)


def test_settings_with_backend_alibi_load_and_build_an_alibi_sensor(tmp_path: Path):
    path = write_config(tmp_path, tmp_path / "policies")
    data = yaml.safe_load(path.read_text())
    data["models"][0]["drift"].update(backend="alibi", numeric_test="cvm")
    path.write_text(yaml.safe_dump(data))
    model = load_settings(path).models[0]

    sensor = DriftSensor.from_config(model.features, model.drift)

    assert sensor.backend == "alibi" and "backend='alibi'" in repr(sensor)
    frame = pd.DataFrame({name: np.linspace(0.0, 1.0, 200) for name in model.features.numeric}
                         | {name: ["a", "b"] * 100 for name in model.features.categorical})
    sensor.fit(frame)
    kinds = {type(d) for d in sensor.detectors_.values()}
    assert kinds == {AlibiCVMDetector, AlibiChiSquareDetector}


def test_the_alibi_report_matches_the_builtin_one_on_shifted_and_clean_windows():
    rng = np.random.default_rng(20260105)
    reference = window(rng, 3000)
    shifted = window(rng, 1500, shift={"x1": 0.4, "c1": 1.0})
    clean = window(rng, 1500)

    alibi = DriftSensor.from_config(FEATURES, DriftConfig(backend="alibi")).fit(reference)
    builtin = DriftSensor(FEATURES, numeric_test="ks").fit(reference)
    assert {type(d) for d in alibi.detectors_.values()} == {AlibiKSDetector, AlibiChiSquareDetector}

    for current, drifted in [(shifted, {"x1", "c1"}), (clean, set())]:
        ours, theirs = alibi.score(current), builtin.score(current)
        assert {f.feature for f in ours.features if f.drifted} == drifted
        assert {f.feature for f in theirs.features if f.drifted} == drifted
        for a, b in zip(ours.features, theirs.features):
            assert (a.feature, a.test, a.effect_name) == (b.feature, b.test, b.effect_name)
            assert a.effect_size == b.effect_size
            # KS: asymptotic (alibi) against exact (built-in, these sizes); chi2: the same test, float32
            assert a.p_value == pytest.approx(b.p_value, rel=0.1, abs=0.01)
        assert ours.n_drifted == theirs.n_drifted and ours.share_drifted == theirs.share_drifted


def test_false_alarms_with_the_alibi_backend_stay_near_alpha():
    rng = np.random.default_rng(11)
    alarms = sum(bool(DriftSensor(FEATURES, backend="alibi").fit(window(rng, 400)).score(window(rng, 300)).detected)
                 for _ in range(100))
    assert alarms <= 12  # BH at 0.05 across 8 features: mean at most 5 of 100, sd 2.2


def test_mape_drift_cli_with_the_alibi_backend_gives_the_builtin_verdicts(tmp_path: Path):
    import json

    from typer.testing import CliRunner

    from mape.cli import app

    rng = np.random.default_rng(11)
    window(rng, 2000).to_csv(tmp_path / "reference.csv", index=False)
    window(rng, 2000, shift={"x0": 0.5, "c1": 1.0}).to_csv(tmp_path / "current.csv", index=False)
    verdicts = {}
    for backend in ("builtin", "alibi"):
        result = CliRunner().invoke(app, ["drift", "--reference", str(tmp_path / "reference.csv"), "--current",
                                          str(tmp_path / "current.csv"), "--backend", backend])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        verdicts[backend] = sorted(f["feature"] for f in report["features"] if f["drifted"])
    assert verdicts["alibi"] == verdicts["builtin"] == ["c1", "x0"]
