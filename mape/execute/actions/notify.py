"""``notify``: tell people about a decision, with its evidence and a link to it, on named channels.

Who calls it: the executor, for decisions whose action type is ``notify`` (a
policy whose only action is to tell someone, e.g. a drift warning). The
message is queued in the knowledge base in the action's own transaction and
sent by the controller's delivery step later in the same tick; a channel that
fails is retried on later ticks by the outbox (:mod:`mape.notify.outbox`), so
the action itself succeeds once the message is queued.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from mape.config import CHANNEL_NAME_PATTERN
from mape.errors import PermanentActionError
from mape.execute.context import ActionContext
from mape.execute.registry import action
from mape.notify import UnknownChannelError, enqueue


class NotifyParams(BaseModel):
    """Parameters of ``notify`` in a policy's ``action.params``."""

    model_config = ConfigDict(extra="forbid")

    channels: list[Annotated[str, StringConstraints(pattern=CHANNEL_NAME_PATTERN)]] = Field(
        min_length=1, description="Channels (named in the notifications settings) that get the message.")
    title: str | None = Field(None, max_length=300, description="The title; default: built from the decision.")
    message: str | None = Field(None, description="A first line of your own, above the decision and its evidence.")


@action("notify", params=NotifyParams)
def notify(ctx: ActionContext, params: NotifyParams) -> dict[str, Any]:
    """Send the decision and its evidence to notification channels."""
    try:
        rows = enqueue(ctx.session, ctx.notifications, "notify", at=ctx.at, decision=ctx.decision, run=ctx.run,
                       model=ctx.model.name, detail=params.message or "", channels=params.channels, only=True,
                       title=params.title)
    except UnknownChannelError as exc:
        raise PermanentActionError(str(exc.args[0])) from None
    return {"channels": list(dict.fromkeys(params.channels)), "queued": [row.id for row in rows]}
