"""Notifications: tell people what the loop decided, what waits for them and what failed.

Who calls it: the controller queues each tick's events
(:func:`enqueue_tick`) and then delivers the due notifications
(:func:`deliver`); the ``notify`` action and the verification code queue their
own with :func:`enqueue`. Channels are Apprise URLs (Slack, Teams, e-mail, a
generic JSON webhook, ...) named in the ``notifications`` settings.

The package sits below the stages (next to :mod:`mape.data`), so the
controller and the execute stage can both use it; it reads only
:mod:`knowledge`, :mod:`mape.config` and :mod:`mape._util`.

* :mod:`mape.notify.message`: what a notification says (:class:`Notification`).
* :mod:`mape.notify.redact`: channel URLs without their secrets.
* :mod:`mape.notify.sender`: one send through Apprise, with timeouts, never raising.
* :mod:`mape.notify.outbox`: queue in the knowledge base, deliver with retries and audit events.
* :mod:`mape.notify.events`: the events of one tick.
"""

from __future__ import annotations

from mape.notify.events import enqueue_tick
from mape.notify.message import Notification, build, dashboard_link, evidence_summary
from mape.notify.outbox import DeliveryReport, UnknownChannelError, deliver, enqueue, recipients

__all__ = ["DeliveryReport", "Notification", "UnknownChannelError", "build", "dashboard_link", "deliver",
           "enqueue", "enqueue_tick", "evidence_summary", "recipients"]
