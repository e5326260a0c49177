"""Load-time check that every notification channel a policy names is configured.

Who calls it: the controller, after :func:`mape.plan.loader.load_policies`,
with the channel names of its ``notifications`` settings. A policy naming a
channel that does not exist (``spec.notify``, or the ``channels`` of a
``notify`` action) is refused like any other invalid policy, with the field
path and position, so a typo never silently drops a message.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterator

from mape.errors import PolicyError
from mape.plan.loader import LoadedPolicy, PolicyLoadResult

#: The built-in action that sends notifications; its ``params.channels`` name channels too.
NOTIFY_ACTION = "notify"


def _named(policy: LoadedPolicy) -> Iterator[tuple[tuple[str | int, ...], str]]:
    for index, name in enumerate(policy.policy.spec.notify):
        yield ("spec", "notify", index), name
    action = policy.policy.spec.action
    channels = action.params.get("channels") if action.type == NOTIFY_ACTION else None
    if isinstance(channels, list):
        for index, name in enumerate(channels):
            yield ("spec", "action", "params", "channels", index), str(name)


def _field(path: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else ("." if i else "") + p for i, p in enumerate(path))


def channel_errors(policy: LoadedPolicy, channels: Collection[str]) -> list[PolicyError]:
    """One error per channel name in ``policy`` that is not among ``channels``."""
    errors: list[PolicyError] = []
    for path, name in _named(policy):
        if name in channels:
            continue
        close = difflib.get_close_matches(name, list(channels), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        known = ", ".join(sorted(channels)) or "none; add them under notifications.channels in the configuration"
        at = policy.position(path)
        errors.append(PolicyError(f"unknown notification channel {name!r}{hint}; configured: {known}",
                                  source=policy.source, field=_field(path), line=at.line if at else None,
                                  column=at.column if at else None))
    return errors


def check_channels(result: PolicyLoadResult, channels: Collection[str]) -> PolicyLoadResult:
    """Refuse the loaded policies that name an unknown channel: they move from ``policies`` to ``errors``."""
    kept: list[LoadedPolicy] = []
    for policy in result.policies:
        errors = channel_errors(policy, channels)
        result.errors.extend(errors)
        if not errors:
            kept.append(policy)
    result.policies = kept
    return result
