"""Send one message to the URLs of one channel through Apprise; never raise, always say what happened.

Who calls it: :func:`mape.notify.outbox.deliver`, once per due notification.
Each URL is expanded (``${NAME}``) just before sending, parsed by Apprise, and
sent once with the configured connect and read timeouts; Apprise's own retry
(``?retry=``) is turned off, because retries are the outbox's: they happen on
later ticks, so a dead channel costs a tick at most the timeouts. What Apprise
logs at warning level while sending becomes the error text, with every part of
the URL that is not shown scrubbed out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from mape._util.envvars import expand
from mape.notify.redact import fingerprint, scrub, secrets_of, shown

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendResult:
    """How sending to one channel went.

    Attributes
    ----------
    ok : bool
        Every URL of the channel has the message (now or on an earlier attempt).
    delivered : tuple of str
        Fingerprints of the URLs that have it (:func:`mape.notify.redact.fingerprint`).
    targets : tuple of str
        The URLs tried, as shown (secrets removed).
    error : str
        What went wrong, one clause per failed URL, secrets scrubbed; empty if ok.
    seconds : float
        Time spent sending.
    """

    ok: bool
    delivered: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    error: str = ""
    seconds: float = 0.0


class _Capture(logging.Handler):
    """Apprise's warnings from this thread only: why a service refused or could not be reached."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(record.getMessage())


def _send_one(url: str, *, title: str, body: str, notify_type: str, timeout: float) -> tuple[str, str | None]:
    """Send to one URL; returns the URL as shown and the error (None if it was accepted)."""
    import apprise

    try:
        expanded = expand(url)
    except ValueError as exc:
        return shown(url), str(exc)
    plugin = apprise.Apprise.instantiate(expanded)
    if plugin is None:
        return shown(url), "Apprise cannot parse this URL"
    display = shown(expanded, plugin)
    secrets = secrets_of(expanded, display)
    plugin.socket_connect_timeout = timeout
    plugin.socket_read_timeout = timeout
    plugin.retry = 0
    capture = _Capture()
    logger = logging.getLogger("apprise")
    logger.addHandler(capture)
    try:
        ok = plugin.notify(body=body, title=title, notify_type=apprise.NotifyType(notify_type),
                           body_format=apprise.NotifyFormat.TEXT)
    except Exception as exc:  # noqa: BLE001 - a plugin's bug is one failed send, never the tick's failure
        ok, capture.messages = False, [*capture.messages, f"{type(exc).__name__}: {exc}"]
    finally:
        logger.removeHandler(capture)
    if ok:
        return display, None
    reason = " ".join(capture.messages[-2:]) or "the service did not accept the message"
    return display, scrub(reason, [expanded, *secrets])


def send(urls: Sequence[str], *, title: str, body: str, notify_type: str = "info", timeout: float = 5.0,
         skip: Collection[str] = ()) -> SendResult:
    """Send to every URL whose fingerprint is not in ``skip``; never raises.

    Parameters
    ----------
    urls : sequence of str
        The channel's URLs as configured (``${NAME}`` unexpanded).
    title, body : str
        The message.
    notify_type : {"info", "success", "warning", "failure"}
        Apprise's message type.
    timeout : float
        Seconds to connect, and again to read the reply, per URL.
    skip : collection of str
        Fingerprints of URLs that already have the message.
    """
    started = time.monotonic()
    delivered = [fp for fp in (fingerprint(u) for u in urls) if fp in skip]
    targets: list[str] = []
    failures: list[str] = []
    for url in urls:
        if fingerprint(url) in skip:
            continue
        try:
            display, error = _send_one(url, title=title, body=body, notify_type=notify_type, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - nothing about a channel may escape into the tick
            display, error = shown(url), f"{type(exc).__name__} while preparing the message"
        targets.append(display)
        if error is None:
            delivered.append(fingerprint(url))
        else:
            failures.append(f"{display}: {error}")
    seconds = time.monotonic() - started
    return SendResult(ok=not failures, delivered=tuple(delivered), targets=tuple(targets),
                      error="; ".join(failures), seconds=seconds)
