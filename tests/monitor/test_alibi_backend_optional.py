"""alibi-detect stays optional: nothing imports it unless configured, and configuring it without it fails early.

The backend itself is tested in ``tests/monitor/alibi/`` (``make test-alibi``, in ``.venv-alibi``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from examples.credit.demo import write_config
from mape.config import DriftConfig, FeaturesConfig, load_settings
from mape.errors import ConfigError, MapeError, MissingDependencyError
from mape.monitor.detectors.alibi import (ALIBI_DETECTORS, ALIBI_MISSING, ALIBI_MULTIVARIATE_DETECTORS,
                                          ALIBI_ONLINE_DETECTORS, AlibiTabularDetector, alibi_available)
from mape.monitor.sensors import DriftSensor

without_alibi = pytest.mark.skipif(alibi_available(), reason="alibi-detect is installed here")


def test_importing_mape_monitor_and_the_backend_package_does_not_import_alibi_detect():
    code = ("import sys, mape.monitor, mape.monitor.stage, mape.monitor.detectors.alibi; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alibi_detect'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.strip() == "[]"


def test_the_builtin_backend_is_the_default():
    assert DriftConfig().backend == "builtin"
    assert DriftSensor(FeaturesConfig(numeric=["x"])).backend == "builtin"


@without_alibi
def test_a_config_asking_for_alibi_without_it_is_a_config_error_naming_drift_backend(tmp_path: Path):
    path = write_config(tmp_path, tmp_path / "policies")
    data = yaml.safe_load(path.read_text())
    data["models"][0]["drift"]["backend"] = "alibi"
    path.write_text(yaml.safe_dump(data))

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert caught.value.field == "models[0].drift.backend"
    assert ALIBI_MISSING in str(caught.value) and str(path) in str(caught.value)


@without_alibi
def test_an_alibi_sensor_without_alibi_raises_the_install_hint_at_construction():
    with pytest.raises(MissingDependencyError, match=r"alibi-detect is not installed; pip install 'mape\[alibi\]'"):
        DriftSensor(FeaturesConfig(numeric=["x"]), backend="alibi")


@without_alibi
@pytest.mark.parametrize("cls", [*ALIBI_DETECTORS, *ALIBI_MULTIVARIATE_DETECTORS, *ALIBI_ONLINE_DETECTORS,
                                 AlibiTabularDetector])
def test_every_wrapper_constructs_without_alibi_and_fails_at_fit_with_the_install_hint(cls):
    detector = cls(alpha=0.01) if "alpha" in cls().get_params() else cls(arl0=100)

    with pytest.raises(MissingDependencyError) as caught:
        detector.fit(np.zeros((10, 1)))

    assert str(caught.value) == ALIBI_MISSING
    assert isinstance(caught.value, (MapeError, ImportError))


@without_alibi
def test_mape_drift_with_the_alibi_backend_names_the_extra_to_install(tmp_path: Path):
    import pandas as pd
    from typer.testing import CliRunner

    from mape.cli import app

    frame = pd.DataFrame({"x": np.arange(200.0)})
    frame.to_csv(tmp_path / "a.csv", index=False)
    result = CliRunner().invoke(app, ["drift", "--reference", str(tmp_path / "a.csv"), "--current",
                                      str(tmp_path / "a.csv"), "--backend", "alibi"])
    assert result.exit_code == 2 and "pip install 'mape[alibi]'" in result.output
    wrong = CliRunner().invoke(app, ["drift", "--reference", str(tmp_path / "a.csv"), "--current",
                                     str(tmp_path / "a.csv"), "--backend", "evidently"])
    assert wrong.exit_code == 2 and "--backend 'evidently': use builtin or alibi" in wrong.output
