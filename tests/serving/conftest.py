"""Fixtures of the serving tests: a tiny fitted classifier stored as an artifact the way training stores one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from mape.data.artifacts import ARTIFACT_FILE


def store(estimator: Any, directory: Path) -> str:
    """Save ``estimator`` as training's ``save_artifact`` does and return its URI."""
    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, directory / ARTIFACT_FILE)
    return directory.resolve().as_uri()


@pytest.fixture(scope="session")
def frame() -> pd.DataFrame:
    """50 rows of two numeric features and a label that depends on both."""
    rng = np.random.default_rng(7)
    data = pd.DataFrame({"income": rng.normal(50, 10, 50), "debt": rng.normal(20, 5, 50)})
    data["label"] = (data["income"] - 2 * data["debt"] + rng.normal(0, 5, 50) > 10).astype(int)
    return data


@pytest.fixture(scope="session")
def estimator(frame: pd.DataFrame) -> LogisticRegression:
    return LogisticRegression().fit(frame[["income", "debt"]], frame["label"])


@pytest.fixture(scope="session")
def artifact_uri(estimator: LogisticRegression, tmp_path_factory: pytest.TempPathFactory) -> str:
    return store(estimator, tmp_path_factory.mktemp("artifacts") / "credit" / "run-1")
