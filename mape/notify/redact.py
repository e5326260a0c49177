"""Channel URLs as they may be shown: in audit events, log lines, errors and the dashboard.

Who calls it: :mod:`mape.notify.sender` names each target by :func:`shown` and
passes every error text through :func:`scrub` before it is stored or logged.
Apprise URLs carry secrets (tokens in the path, passwords, webhook keys), and
the knowledge base is read by people who must not learn them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

from mape._util.envvars import references

#: A path segment this long is taken for a token and shortened, even where Apprise would show it.
TOKEN_LENGTH = 16
_SPLIT = re.compile(r"[/:@?&=#,+]+")


def _mask(segment: str) -> str:
    return f"{segment[0]}…{segment[-1]}" if len(segment) >= TOKEN_LENGTH else segment


def shown(url: str, plugin: Any | None = None) -> str:
    """The URL without its secrets: Apprise's private form, without the query string, long segments shortened.

    ``plugin`` is the Apprise plugin the URL was parsed into; without one only
    the scheme is shown, or the URL as written if its secrets are ``${VARIABLES}``.

    >>> shown("json://127.0.0.1:8080/hook"), shown("slack://${SLACK_TOKENS}/#ops")
    ('json://…', 'slack://${SLACK_TOKENS}/#ops')
    """
    if plugin is None:
        if references(url):  # as configured: its secrets are in the environment
            return url
        scheme, sep, _ = url.partition("://")
        return f"{scheme}://…" if sep else "…"
    private = str(plugin.url(privacy=True)).split("?", 1)[0]
    scheme, sep, rest = private.partition("://")
    authority, slash, path = rest.partition("/")  # Apprise already hides the password in the authority
    return scheme + sep + authority + slash + "/".join(_mask(part) for part in path.split("/"))


def secrets_of(url: str, display: str) -> list[str]:
    """Parts of ``url`` that ``display`` does not show: what must never appear in a stored text.

    >>> secrets_of("slack://T0123456/B0123456/XXXXsecretXXXX/#ops", "slack://T...6/B...6/X...X/%23ops")
    ['XXXXsecretXXXX', 'B0123456', 'T0123456']
    """
    parts = {p for p in _SPLIT.split(url.partition("://")[2]) if len(p) >= 4}
    hidden = [p for p in parts if p not in display]
    return sorted(hidden, key=lambda p: (-len(p), p))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret in ``text`` with ``****`` (longest first, so no secret survives in part).

    >>> scrub("POST to https://hooks/abc123token failed", ["abc123token"])
    'POST to https://hooks/**** failed'
    """
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, "****")
    return text


def fingerprint(url: str) -> str:
    """A short, stable name for one configured URL, stored instead of the URL to remember who has the message.

    >>> len(fingerprint("json://127.0.0.1/hook"))
    16
    """
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
