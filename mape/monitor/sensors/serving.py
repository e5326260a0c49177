"""How many replicas serve a model, read from its serving target every tick.

Who calls it: the Monitor stage, for models with a ``serving`` section. The
observations (sensor ``serving``, labels ``{}``) are what policies read as
``serving.replicas`` (replicas asked for) and ``serving.ready_replicas``
(replicas answering their health check), e.g. the shipped
``scale-down-when-gpu-idle`` policy, which never scales below one replica.
"""

from __future__ import annotations

from datetime import datetime

from knowledge.tables import Observation
from mape.serving.target import ServingHealth

__all__ = ["serving_observations"]


def serving_observations(model_id: int, at: datetime, health: ServingHealth) -> list[Observation]:
    """The observations of one reading of a serving target.

    >>> from datetime import timezone
    >>> rows = serving_observations(1, datetime(2026, 1, 5, tzinfo=timezone.utc),
    ...                             ServingHealth(replicas=3, ready=2, endpoints=[], detail="2 of 3 replicas ready"))
    >>> [(r.metric, r.value) for r in rows]
    [('serving.replicas', 3.0), ('serving.ready_replicas', 2.0)]
    """
    return [
        Observation(time=at, model_id=model_id, sensor="serving", metric="serving.replicas",
                    value=float(health.replicas)),
        Observation(time=at, model_id=model_id, sensor="serving", metric="serving.ready_replicas",
                    value=float(health.ready)),
    ]
