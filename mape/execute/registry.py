"""Registration of action types, kopf-style: a decorator stores a frozen spec and returns the function.

Who calls it: :mod:`mape.execute.actions` registers the built-ins on the
default registry at import; users register their own with the same decorator
(a registry can be passed in, for tests and embedding), and installed
distributions bring theirs through the ``mape.actions`` entry point group,
which :meth:`ActionRegistry.load_entry_points` reads (the controller at start,
``mape policy validate``, ``mape actions list``). The loader of the Plan stage
learns the known action types and their parameter models from
:meth:`ActionRegistry.params_models`, passed to it by the controller or the CLI.

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

An entry point names a module (importing it runs its ``@action`` decorators),
a function decorated with ``@action``, or a function ``register(registry)``
that registers actions itself. In a distribution's ``pyproject.toml``::

    [project.entry-points."mape.actions"]
    scaling = "acme_mape.scaling"            # a module of @action functions
"""

from __future__ import annotations

import importlib.metadata
import logging
import types
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger(__name__)

#: The entry point group of action plugins.
ENTRY_POINT_GROUP = "mape.actions"
#: :meth:`ActionRegistry.origin` of an action registered in code rather than through an entry point.
BUILT_IN = "built-in"


@dataclass(frozen=True)
class ActionSpec:
    """What the executor needs to know about an action type.

    Parameters
    ----------
    name : str
        The action type, as policies name it (``spec.action.type``).
    fn : callable
        The effector, ``fn(ctx, params) -> dict``.
    params : type of pydantic BaseModel
        The model of its parameters: policies' ``spec.action.params`` are
        validated against it at load, and every run's parameters at run time.
    retries, retry_delay, timeout
        How the executor retries and times out its runs.
    description : str
        One line, shown by ``mape actions list``.
    conflicts : tuple of str
        Action types that undo or contradict this one (``scale-down`` for
        ``scale-up``): two policies that can fire for the same model with these
        actions at equal priority are reported by ``mape policy validate``.
    """

    name: str
    fn: Callable[..., dict[str, Any]]
    params: type[BaseModel]
    retries: int = 0
    retry_delay: timedelta = timedelta(seconds=30)
    timeout: timedelta | None = None
    description: str = ""
    conflicts: tuple[str, ...] = ()


@dataclass(frozen=True)
class EntryPointFailure:
    """An entry point of the ``mape.actions`` group that could not be loaded; its actions are skipped.

    Parameters
    ----------
    distribution : str
        The installed distribution that declares it, with its version (``acme-mape 1.2``).
    name, value : str
        The entry point as declared: ``name = value``.
    error : str
        What went wrong, with the exception's type.
    group : str
        The entry point group.
    """

    distribution: str
    name: str
    value: str
    error: str
    group: str = ENTRY_POINT_GROUP

    def as_dict(self) -> dict[str, str]:
        return {"distribution": self.distribution, "entry_point": self.name, "value": self.value,
                "group": self.group, "error": self.error}

    def __str__(self) -> str:
        return (f"entry point {self.name} = {self.value} of distribution {self.distribution} ({self.group}) "
                f"failed to load; its actions are skipped: {self.error}")


#: ``@action`` decorators without a registry register here while an entry point loads (else on the default one).
_loading: ContextVar["ActionRegistry | None"] = ContextVar("mape_loading_actions", default=None)
#: Every spec an ``@action`` decorator made, by the module of its function and the action type (the latest, if a
#: module ran twice): an entry point naming a module that another registry imported first still brings its actions.
_declared: dict[str, dict[str, ActionSpec]] = {}


class ActionRegistry:
    """A name → :class:`ActionSpec` mapping; registering a name twice is an error."""

    def __init__(self) -> None:
        self._specs: dict[str, ActionSpec] = {}
        self._origins: dict[str, str] = {}
        self._entry_points: set[tuple[str, str, str]] = set()
        #: Entry points that failed to load, in the order they were tried.
        self.entry_point_failures: list[EntryPointFailure] = []

    def register(self, spec: ActionSpec, *, origin: str = BUILT_IN) -> None:
        if spec.name in self._specs:
            raise ValueError(f"action type {spec.name!r} is already registered (by {self._specs[spec.name].fn.__name__})")
        self._specs[spec.name] = spec
        self._origins[spec.name] = origin

    def get(self, name: str) -> ActionSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise KeyError(f"unknown action type {name!r}; known: {', '.join(self.names()) or 'none'}") from None

    def names(self) -> list[str]:
        return sorted(self._specs)

    def specs(self) -> list[ActionSpec]:
        """Every registered spec, by name."""
        return [self._specs[name] for name in self.names()]

    def params_models(self) -> dict[str, type[BaseModel]]:
        """Action type → its parameter model: what the policy loader validates ``spec.action.params`` with."""
        return {name: self._specs[name].params for name in self.names()}

    def conflicting_pairs(self) -> set[frozenset[str]]:
        """The pairs of action types that a registered spec declares as conflicting (its ``conflicts``)."""
        return {frozenset({spec.name, other}) for spec in self._specs.values() for other in spec.conflicts
                if other != spec.name}

    def origin(self, name: str) -> str:
        """Where an action type came from: ``built-in``, or the distribution and entry point that brought it."""
        return self._origins.get(name, BUILT_IN)

    def copy(self) -> "ActionRegistry":
        """A new registry with the same actions (and origins), to add plugins to without touching this one."""
        other = ActionRegistry()
        other._specs = dict(self._specs)
        other._origins = dict(self._origins)
        return other

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._specs)

    # ------------------------------------------------------------------ entry points

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP, *,
                          entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
                          ) -> list[EntryPointFailure]:
        """Register the actions of every installed entry point of ``group``; return the ones that failed.

        Each entry point is loaded once per registry (calling this again only
        loads new ones) and all or nothing: when importing it raises, or one of
        its actions repeats a registered type, none of its actions is kept.
        A failure is logged, kept in :attr:`entry_point_failures` and
        returned; it never raises, so one broken plugin cannot stop the
        controller.

        Parameters
        ----------
        group : str
            The entry point group (default ``mape.actions``).
        entry_points : iterable of EntryPoint, optional
            Instead of the installed ones (``importlib.metadata.entry_points``).
        """
        if entry_points is None:
            entry_points = importlib.metadata.entry_points(group=group)
        failures: list[EntryPointFailure] = []
        for entry_point in sorted(entry_points, key=lambda e: (_distribution(e), e.name)):
            key = (_distribution(entry_point), entry_point.name, entry_point.value)
            if key in self._entry_points:
                continue
            self._entry_points.add(key)
            failure = self._load_entry_point(entry_point, group)
            if failure is not None:
                log.warning("%s", failure)
                failures.append(failure)
        self.entry_point_failures.extend(failures)
        return failures

    def _load_entry_point(self, entry_point: importlib.metadata.EntryPoint, group: str) -> EntryPointFailure | None:
        distribution = _distribution(entry_point)
        origin = f"{distribution} (entry point {entry_point.name})"
        before = dict(self._specs)
        token = _loading.set(self)
        try:
            target = entry_point.load()
            if isinstance(target, types.ModuleType):
                declared = _declared_in(target.__name__)
                for spec in declared:
                    self._adopt(spec)
                if not declared:
                    raise LookupError(f"module {target.__name__} registers no action (no @action function)")
            elif (spec := _declared_spec(target)) is not None:
                self._adopt(spec)
            elif callable(target):
                target(self)
            else:
                raise TypeError(f"{entry_point.value} is a {type(target).__name__}; name a module, an @action "
                                f"function or a function register(registry)")
        except Exception as exc:  # noqa: BLE001 - a broken plugin is reported and skipped, never stops the loop
            self._specs = before
            self._origins = {name: origin_ for name, origin_ in self._origins.items() if name in before}
            return EntryPointFailure(distribution=distribution, name=entry_point.name, value=entry_point.value,
                                     error=f"{type(exc).__name__}: {exc}", group=group)
        finally:
            _loading.reset(token)
        for name in self._specs.keys() - before.keys():
            self._origins[name] = origin
        return None

    def _adopt(self, spec: ActionSpec) -> None:
        """Register a declared spec unless this very spec is registered already."""
        if self._specs.get(spec.name) is not spec:
            self.register(spec)


def _distribution(entry_point: importlib.metadata.EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return "an unknown distribution"
    return f"{dist.name} {dist.version}"


def _declared_in(module: str) -> list[ActionSpec]:
    """The specs ``@action`` made for functions of ``module`` and its submodules."""
    return [spec for name, specs in sorted(_declared.items()) if name == module or name.startswith(module + ".")
            for spec in specs.values()]


def _declared_spec(fn: object) -> ActionSpec | None:
    module = getattr(fn, "__module__", None)
    return next((spec for spec in _declared.get(module or "", {}).values() if spec.fn is fn), None)


default_registry = ActionRegistry()


def action(
    name: str, *, params: type[BaseModel], retries: int = 0, retry_delay: timedelta = timedelta(seconds=30),
    timeout: timedelta | None = None, registry: ActionRegistry | None = None, description: str | None = None,
    conflicts: Iterable[str] = (),
) -> Callable[[F], F]:
    """Register ``fn(ctx, params) -> dict`` as the effector of action type ``name``; returns ``fn`` unchanged.

    Without ``registry``, the action goes to the registry loading an entry
    point at the time (see :meth:`ActionRegistry.load_entry_points`), else to
    the default registry. ``description`` defaults to the first line of the
    function's docstring; ``conflicts`` names action types that contradict
    this one (see :class:`ActionSpec`).
    """

    def decorate(fn: F) -> F:
        doc = (fn.__doc__ or "").strip()
        spec = ActionSpec(
            name=name, fn=fn, params=params, retries=retries, retry_delay=retry_delay, timeout=timeout,
            description=description if description is not None else (doc.splitlines()[0] if doc else ""),
            conflicts=tuple(conflicts),
        )
        target = registry if registry is not None else _loading.get()
        (target if target is not None else default_registry).register(spec)
        _declared.setdefault(fn.__module__, {})[name] = spec
        return fn

    return decorate
