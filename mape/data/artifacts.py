"""Model artifacts on disk: a fitted estimator stored with joblib in a directory named by a ``file://`` URI.

Who calls it: the ``retrain`` effector stores candidates (through
:mod:`mape.execute.training`), the gate and the model servers of
:mod:`mape.serving` load them, and so does the demo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib

from mape.errors import PermanentActionError

__all__ = ["ARTIFACT_FILE", "artifact_file", "load_artifact", "save_artifact"]

#: The file holding the estimator inside an artifact directory.
ARTIFACT_FILE = "model.joblib"


def save_artifact(estimator: Any, directory: Path) -> str:
    """Store ``estimator`` in ``directory`` (created if needed); returns the directory's ``file://`` URI."""
    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, directory / ARTIFACT_FILE)
    return directory.resolve().as_uri()


def artifact_file(uri: str) -> Path:
    """The joblib file of an artifact URI (a ``file://`` directory URI, a directory, or the file itself)."""
    path = Path(uri[len("file://"):]) if uri.startswith("file://") else Path(uri)
    return path / ARTIFACT_FILE if path.is_dir() or not path.suffix else path


def load_artifact(uri: str) -> Any:
    """Load the estimator stored at a ``file://`` directory URI (or a plain path).

    Raises
    ------
    PermanentActionError
        When there is no artifact there.
    """
    file = artifact_file(uri)
    try:
        return joblib.load(file)
    except FileNotFoundError:
        raise PermanentActionError(f"model artifact not found at {file}") from None
