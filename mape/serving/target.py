"""What a serving target is, how far it may be scaled, and the pure rule that decides one scaling step.

Who calls it: the ``rescale`` effector asks :func:`plan_replicas` for the
next replica count within a model's :class:`ScaleBounds`, then calls
:meth:`ServingTarget.scale` on the model's target (for instance
:class:`mape.serving.local.LocalReplicaSet`); monitors read
:meth:`ServingTarget.health`. The rule is pure — it takes the time and the
last scale-up as arguments — so the planner, the effector and the tests agree
on it and a restarted controller decides the same.

The scale-down stabilization window is the Kubernetes Horizontal Pod
Autoscaler's idea: after a scale-up, replicas are not removed again until the
window has passed, so a noisy signal cannot make the replica count flap.
Scale-ups are never delayed.

>>> from datetime import datetime, timezone
>>> bounds = ScaleBounds(min_replicas=1, max_replicas=4, max_step=2, scale_down_stabilization="5m")
>>> t = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
>>> print(plan_replicas(1, 9, bounds, last_scale_up_at=None, at=t))
scale up from 1 to 3 replicas; requested 9, above max_replicas 4; at most 2 replicas per step (max_step)
>>> step = plan_replicas(3, 1, bounds, last_scale_up_at=t, at=t + timedelta(minutes=2))
>>> step.target, step.limited_by
(3, 'stabilization')
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from collections.abc import Callable
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from mape._util.timeutil import ensure_utc, format_duration
from mape.config import ScaleBounds
from mape.errors import InvalidParameterError, ServingError

__all__ = ["LimitedBy", "ScaleBounds", "ScaleStep", "ServingHealth", "ServingTarget", "plan_replicas"]

LimitedBy = Literal["min_replicas", "max_replicas", "max_step", "stabilization"]


class ServingHealth(BaseModel):
    """What a serving target reports about its replicas.

    Attributes
    ----------
    replicas : int
        How many replicas the target should run (the last count it was scaled to).
    ready : int
        How many replicas answer their health check now.
    endpoints : list of str
        Base URLs of the ready replicas, e.g. ``http://127.0.0.1:18500``.
    detail : str
        One sentence for people: what is ready, which versions are served, what is wrong.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    replicas: int = Field(ge=0)
    ready: int = Field(ge=0)
    endpoints: list[str] = Field(default_factory=list)
    detail: str = ""

    def __str__(self) -> str:
        return self.detail or f"{self.ready} of {self.replicas} replicas ready"


@runtime_checkable
class ServingTarget(Protocol):
    """Something that runs replicas of one model and can change how many.

    Implementations must be idempotent (``scale(n)`` twice acts once) and must
    keep their state outside the Python process, because every controller tick
    runs in a fresh one.
    """

    def replicas(self) -> int:
        """How many replicas are running now."""
        ...

    def scale(self, n: int) -> int:
        """Start or stop replicas until ``n`` run; return how many run afterwards."""
        ...

    def health(self) -> ServingHealth:
        """Ask every replica whether it answers."""
        ...


@dataclass(frozen=True)
class ScaleStep:
    """One scaling decision of :func:`plan_replicas`.

    Attributes
    ----------
    current : int
        Replicas running when the step was planned.
    requested : int
        Replicas asked for.
    target : int
        Replicas to scale to (``current`` when nothing should change).
    reason : str
        One sentence saying what happens and which limit, if any, changed the request.
    limited_by : {None, "min_replicas", "max_replicas", "max_step", "stabilization"}
        The limit that decided ``target`` last, or None when the request was taken as is.
    """

    current: int
    requested: int
    target: int
    reason: str
    limited_by: LimitedBy | None = None

    @property
    def changes(self) -> bool:
        """Whether the step starts or stops any replica."""
        return self.target != self.current

    def __str__(self) -> str:
        return self.reason


def plan_replicas(
    current: int, requested: int, bounds: ScaleBounds, *, last_scale_up_at: datetime | None, at: datetime,
) -> ScaleStep:
    """Decide how many replicas to run next: clamp, stabilize scale-downs, then limit the step.

    Parameters
    ----------
    current : int
        Replicas running now.
    requested : int
        Replicas the decision asks for.
    bounds : ScaleBounds
        The model's limits.
    last_scale_up_at : datetime or None
        When the replicas were last scaled up (None: never, or not known).
    at : datetime
        Now; naive values are taken as UTC.

    Returns
    -------
    ScaleStep
        ``target`` lies in ``[min_replicas, max_replicas]`` unless ``current``
        lies so far outside that ``max_step`` keeps it out; a count outside the
        bounds moves back inside even during the stabilization window.

    Raises
    ------
    InvalidParameterError
        When ``current`` or ``requested`` is negative.

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> bounds = ScaleBounds(min_replicas=1, max_replicas=4, scale_down_stabilization="300s")
    >>> up = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
    >>> print(plan_replicas(2, 1, bounds, last_scale_up_at=up, at=up + timedelta(minutes=1)))
    scale-down from 2 to 1 refused: the last scale-up at 2026-01-05T12:00:00Z is within the 5m stabilization window; allowed from 2026-01-05T12:05:00Z
    >>> print(plan_replicas(2, 1, bounds, last_scale_up_at=up, at=up + timedelta(minutes=5)))
    scale down from 2 to 1 replicas
    >>> print(plan_replicas(2, 0, bounds, last_scale_up_at=None, at=up))
    scale down from 2 to 1 replicas; requested 0, below min_replicas 1
    """
    for name, value in (("current", current), ("requested", requested)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidParameterError.for_parameter(name, "plan_replicas", "an int >= 0", value)
    notes: list[str] = []
    limited_by: LimitedBy | None = None

    desired = requested
    if requested > bounds.max_replicas:
        desired, limited_by = bounds.max_replicas, "max_replicas"
        notes.append(f"requested {requested}, above max_replicas {bounds.max_replicas}")
    elif requested < bounds.min_replicas:
        desired, limited_by = bounds.min_replicas, "min_replicas"
        notes.append(f"requested {requested}, below min_replicas {bounds.min_replicas}")

    if desired < current and last_scale_up_at is not None:
        allowed_from = ensure_utc(last_scale_up_at) + bounds.scale_down_stabilization
        if ensure_utc(at) < allowed_from:
            kept = min(current, bounds.max_replicas)  # the bounds win over the window
            if kept == current:
                reason = (f"scale-down from {current} to {desired} refused: the last scale-up at "
                          f"{_iso(last_scale_up_at)} is within the "
                          f"{format_duration(bounds.scale_down_stabilization)} stabilization window; "
                          f"allowed from {_iso(allowed_from)}")
                return ScaleStep(current, requested, current, reason, "stabilization")
            if kept != desired:
                desired, limited_by = kept, "stabilization"
                notes.append(f"no further down than max_replicas {bounds.max_replicas} until "
                             f"{_iso(allowed_from)} (stabilization window)")

    target = desired
    if abs(desired - current) > bounds.max_step:
        target = current + bounds.max_step if desired > current else current - bounds.max_step
        limited_by = "max_step"
        plural = "replica" if bounds.max_step == 1 else "replicas"
        notes.append(f"at most {bounds.max_step} {plural} per step (max_step)")

    if target == current:
        head = f"stay at {current} replicas"
    else:
        head = f"scale {'up' if target > current else 'down'} from {current} to {target} replicas"
    return ScaleStep(current, requested, target, "; ".join([head, *notes]), limited_by)


def served_artifact(artifact: Callable[[], tuple[int, str]], *, model: str, target: str = "") -> tuple[int, str]:
    """The version and artifact URI a target should serve, from its ``artifact`` lookup.

    A lookup that fails with a :class:`ServingError` says itself what is
    wrong; any other failure of it is this target failing, said so.
    """
    try:
        version, uri = artifact()
    except ServingError:
        raise
    except Exception as exc:  # noqa: BLE001 - the caller's lookup failing is this target failing
        which = f"which version {target} should serve" if target else "which version to serve"
        raise ServingError(f"cannot tell {which}: {type(exc).__name__}: {exc}", model=model) from None
    return int(version), uri


def _iso(value: datetime) -> str:
    return ensure_utc(value).isoformat().replace("+00:00", "Z")
