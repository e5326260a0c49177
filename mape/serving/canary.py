"""How many replicas a canary step runs beside production: a share of the traffic as a share of the replicas.

Who calls it: the canary of the Execute stage (:mod:`mape.execute.canary`),
when a canary starts and each time it widens to its next step.

A Kubernetes Service that selects the pods of two Deployments (production's
and its ``-canary`` twin), like any balancer over the endpoints of both of
the local target's replica sets, sends each ready replica about the same
share of the requests. So the candidate's share of the traffic is its share
of the replicas, ``canary / (stable + canary)``, the way a replica-ratio
canary works without a service mesh. A canary never changes production's
replicas: it adds its own beside them, at least one, as many as bring the
share nearest the step's.

>>> canary_replicas(4, 0.2), canary_replicas(4, 0.5), canary_replicas(1, 0.1)
(1, 4, 1)
>>> f"{served_share(4, 1):.0%}"
'20%'
"""

from __future__ import annotations

import math

from mape.errors import InvalidParameterError

__all__ = ["canary_replicas", "served_share"]


def canary_replicas(stable: int, share: float) -> int:
    """Canary replicas to run beside ``stable`` production ones so that they serve about ``share`` of the traffic.

    Parameters
    ----------
    stable : int
        Replicas serving production (at least 1: a canary shares production's traffic).
    share : float
        The step's share of the traffic, in ``(0, 1)``.

    Returns
    -------
    int
        The count nearest ``share * stable / (1 - share)``, and at least 1
        (the smallest canary; the share it gives may exceed ``share`` when
        production runs few replicas).

    Raises
    ------
    InvalidParameterError
        When ``stable`` is not an int >= 1 or ``share`` not a number in (0, 1).

    Examples
    --------
    >>> canary_replicas(9, 0.1), canary_replicas(3, 0.5), canary_replicas(2, 0.25)
    (1, 3, 1)
    """
    if isinstance(stable, bool) or not isinstance(stable, int) or stable < 1:
        raise InvalidParameterError.for_parameter("stable", "canary_replicas", "an int >= 1", stable)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 1:
        raise InvalidParameterError.for_parameter("share", "canary_replicas", "a float in (0, 1)", share)
    return max(1, math.floor(share * stable / (1 - share) + 0.5))


def served_share(stable: int, canary: int) -> float:
    """The share of the traffic ``canary`` replicas beside ``stable`` ones serve (0 when none run).

    >>> served_share(3, 1)
    0.25
    """
    total = stable + canary
    return canary / total if total > 0 else 0.0
