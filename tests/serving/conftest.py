"""Fixtures of the serving tests: a tiny fitted classifier stored as an artifact the way training stores one,
and a recorded Kubernetes API server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from mape.data.artifacts import ARTIFACT_FILE
from tests.serving.fake_apiserver import RecordedApiServer


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


@pytest.fixture
def apiserver(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordedApiServer]:
    """A recorded Kubernetes API server on loopback holding Deployment ``ml/ranker`` at 2 replicas.

    Its bearer token is in ``$MAPE_TEST_K8S_TOKEN``; proxies from the environment are cleared, so the
    client talks to 127.0.0.1 directly.
    """
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with RecordedApiServer() as server:
        server.add("ml", "ranker", replicas=2)
        assert server.token is not None
        monkeypatch.setenv("MAPE_TEST_K8S_TOKEN", server.token)
        yield server
