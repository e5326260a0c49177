"""Registration of action types, kopf-style: a decorator stores a frozen spec and returns the function.

Who calls it: :mod:`mape.execute.actions` registers the built-ins on the
default registry at import; users register their own with the same decorator
(a registry can be passed in, for tests and embedding). The planner learns the
known action types from :meth:`ActionRegistry.names`.

>>> from pydantic import BaseModel
>>> registry = ActionRegistry()
>>> class NoParams(BaseModel):
...     pass
>>> @action("noop", params=NoParams, registry=registry)
... def noop(ctx, params):
...     return {}
>>> registry.get("noop").retries, noop.__name__
(0, 'noop')
>>> action("noop", params=NoParams, registry=registry)(noop)
Traceback (most recent call last):
...
ValueError: action type 'noop' is already registered (by noop)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class ActionSpec:
    """What the executor needs to know about an action type."""

    name: str
    fn: Callable[..., dict[str, Any]]
    params: type[BaseModel]
    retries: int = 0
    retry_delay: timedelta = timedelta(seconds=30)
    timeout: timedelta | None = None
    description: str = ""


class ActionRegistry:
    """A name → :class:`ActionSpec` mapping; registering a name twice is an error."""

    def __init__(self) -> None:
        self._specs: dict[str, ActionSpec] = {}

    def register(self, spec: ActionSpec) -> None:
        if spec.name in self._specs:
            raise ValueError(f"action type {spec.name!r} is already registered (by {self._specs[spec.name].fn.__name__})")
        self._specs[spec.name] = spec

    def get(self, name: str) -> ActionSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise KeyError(f"unknown action type {name!r}; known: {', '.join(self.names()) or 'none'}") from None

    def names(self) -> list[str]:
        return sorted(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs


default_registry = ActionRegistry()


def action(
    name: str, *, params: type[BaseModel], retries: int = 0, retry_delay: timedelta = timedelta(seconds=30),
    timeout: timedelta | None = None, registry: ActionRegistry | None = None,
) -> Callable[[F], F]:
    """Register ``fn(ctx, params) -> dict`` as the effector of action type ``name``; returns ``fn`` unchanged."""

    def decorate(fn: F) -> F:
        (registry if registry is not None else default_registry).register(ActionSpec(
            name=name, fn=fn, params=params, retries=retries, retry_delay=retry_delay, timeout=timeout,
            description=(fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "",
        ))
        return fn

    return decorate
