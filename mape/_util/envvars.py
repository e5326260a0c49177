"""``${NAME}`` references to environment variables inside configuration values.

Who calls it: the notification settings (:mod:`mape.config`) check at load
time that every variable a channel URL names is set, and the sender
(:mod:`mape.notify.sender`) expands the URL just before it sends, so secrets
live in the environment, never in the YAML file, the knowledge base or
``mape config show``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def references(text: str) -> list[str]:
    """The variable names ``text`` refers to, in order.

    >>> references("slack://${SLACK_A}/${SLACK_B}/#ops")
    ['SLACK_A', 'SLACK_B']
    """
    return _REFERENCE.findall(text)


def expand(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace every ``${NAME}`` with the variable's value; an unset variable is an error.

    Only the braced form is expanded, so a ``$`` elsewhere in a URL stays as written.

    >>> expand("json://${HOOK_HOST}/hook", {"HOOK_HOST": "127.0.0.1:8080"})
    'json://127.0.0.1:8080/hook'
    >>> expand("json://${HOOK_HOST}/hook", {})
    Traceback (most recent call last):
    ...
    ValueError: environment variable HOOK_HOST is not set
    """
    env = os.environ if environ is None else environ
    missing = [name for name in references(text) if name not in env]
    if missing:
        raise ValueError(f"environment variable {', '.join(dict.fromkeys(missing))} is not set")
    return _REFERENCE.sub(lambda m: env[m.group(1)], text)
