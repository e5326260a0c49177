"""Model artifacts: a fitted estimator stored with joblib in a directory named by a URI (local or any fsspec one).

Who calls it: the ``retrain`` effector stores candidates (through
:mod:`mape.execute.training`), the gate and the model servers of
:mod:`mape.serving` load them, and so does the demo.

Where: a local directory by default (``artifacts_dir``; its URI is
``file:///...``), or any filesystem fsspec knows (``artifacts_uri: s3://bucket/mape``,
``gcs://...``, ``memory://...``; the protocol's package must be installed,
e.g. ``s3fs``). Local paths and ``file://`` URIs are handled without fsspec.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib

from mape.errors import PermanentActionError, TransientActionError

__all__ = ["ARTIFACT_FILE", "Location", "artifact_file", "join_location", "load_artifact", "save_artifact"]

#: The file holding the estimator inside an artifact directory.
ARTIFACT_FILE = "model.joblib"

#: Where an artifact directory is: a local path, or a URI with a protocol (``s3://...``, ``file:///...``).
Location = Path | str


def _remote(location: Location) -> bool:
    return isinstance(location, str) and "://" in location and not location.startswith("file://")


def join_location(base: Location, *parts: str) -> Location:
    """``base`` with ``parts`` appended: a Path for local bases, a ``/``-joined URI otherwise.

    >>> join_location("s3://bucket/mape/", "churn", "run-7")
    's3://bucket/mape/churn/run-7'
    >>> join_location(Path("/srv/artifacts"), "churn", "run-7")
    PosixPath('/srv/artifacts/churn/run-7')
    """
    if _remote(base):
        return "/".join([str(base).rstrip("/"), *parts])
    path = Path(str(base)[len("file://"):]) if isinstance(base, str) and base.startswith("file://") else Path(base)
    return path.joinpath(*parts)


def save_artifact(estimator: Any, directory: Location) -> str:
    """Store ``estimator`` in ``directory`` (created if needed); returns the directory's URI.

    Raises
    ------
    PermanentActionError
        For a URI whose protocol fsspec does not know or whose package is not installed.
    TransientActionError
        When the remote store cannot be written (retried by the action's policy).
    """
    if not _remote(directory):
        path = Path(directory[len("file://"):]) if isinstance(directory, str) else Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        joblib.dump(estimator, path / ARTIFACT_FILE)
        return path.resolve().as_uri()
    uri = str(directory).rstrip("/")
    fs, root = _filesystem(uri)
    try:
        fs.makedirs(root, exist_ok=True)
        with fs.open(f"{root}/{ARTIFACT_FILE}", "wb") as handle:
            joblib.dump(estimator, handle)
    except OSError as exc:
        raise TransientActionError(f"cannot write the model artifact to {uri}: {exc}", delay=300) from None
    return uri


def artifact_file(uri: str) -> Path:
    """The joblib file of a local artifact URI (a ``file://`` directory URI, a directory, or the file itself)."""
    path = Path(uri[len("file://"):]) if uri.startswith("file://") else Path(uri)
    return path / ARTIFACT_FILE if path.is_dir() or not path.suffix else path


def load_artifact(uri: str) -> Any:
    """Load the estimator stored at an artifact URI (``file://`` or any fsspec protocol) or a plain path.

    Raises
    ------
    PermanentActionError
        When there is no artifact there, or the protocol is unknown.
    """
    if not _remote(uri):
        file = artifact_file(uri)
        try:
            return joblib.load(file)
        except FileNotFoundError:
            raise PermanentActionError(f"model artifact not found at {file}") from None
    fs, root = _filesystem(uri.rstrip("/"))
    target = root if root.endswith(".joblib") else f"{root}/{ARTIFACT_FILE}"
    try:
        with fs.open(target, "rb") as handle:
            return joblib.load(handle)
    except FileNotFoundError:
        raise PermanentActionError(f"model artifact not found at {uri}") from None


def _filesystem(uri: str) -> tuple[Any, str]:
    import fsspec  # only for remote stores

    try:
        return fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:  # unknown protocol, or its package (s3fs, gcsfs, ...) missing
        raise PermanentActionError(f"artifact store {uri}: {exc}") from None
