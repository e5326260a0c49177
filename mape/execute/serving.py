"""What the Execute stage's effectors share about serving targets: which version replicas serve, and failures.

Who calls it: the ``rescale`` effector and the canary
(:mod:`mape.execute.canary`), which both change a model's replicas through
:mod:`mape.serving`.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Engine
from sqlmodel import Session

from knowledge import registry
from knowledge.tables import ModelVersion
from mape.errors import PermanentActionError, ServingError, TransientActionError

__all__ = ["action_error", "production_artifact", "version_artifact"]

Artifact = Callable[[], tuple[int, str]]


def production_artifact(engine: Engine, model_id: int, model: str) -> Artifact:
    """The version number and artifact of the model's production version, read when replicas start.

    A fresh session each time: replicas started later (by another process)
    serve what is in production then.
    """

    def production() -> tuple[int, str]:
        with Session(engine) as session:
            version = registry.production_version(session, model_id)
            if version is None:
                raise ServingError("has no production version to serve", model=model)
            return version.version, version.artifact_uri

    return production


def version_artifact(version: ModelVersion) -> Artifact:
    """Always ``version`` (a canary's replicas serve its candidate, whatever production is)."""
    number, uri = version.version, version.artifact_uri
    return lambda: (number, uri)


def action_error(exc: ServingError) -> TransientActionError | PermanentActionError:
    """A transient serving failure is retried after a minute; any other fails the run at once."""
    if exc.transient:
        return TransientActionError(str(exc), delay=60)
    return PermanentActionError(str(exc))
