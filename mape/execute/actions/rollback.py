"""``rollback``: return production to the last version that was in production before.

Who calls it: the executor, for decisions whose action type is ``rollback``.
The version rolled back from is marked rejected, so it is never a rollback
target itself; the audit event names the decision and its evidence.
Production's replicas are moved to the version rolled back to in the same
attempt (:func:`mape.execute.production_serving.move`): a rollback that
cannot reach its replicas is undone and retried, not recorded as done.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from knowledge import registry
from mape.errors import PermanentActionError
from mape.execute import production_serving
from mape.execute.context import ActionContext
from mape.execute.registry import action


class RollbackParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@action("rollback", params=RollbackParams, retries=1)
def rollback(ctx: ActionContext, params: RollbackParams) -> dict[str, Any]:
    """Return production to the last good version."""
    current = registry.production_version(ctx.session, ctx.model.id)
    try:
        target = registry.rollback(
            ctx.session, ctx.model.id, actor=ctx.actor,
            reason=f"decision {ctx.decision.id} of policy {ctx.decision.policy_name}", at=ctx.at,
        )
    except registry.RegistryError as exc:
        raise PermanentActionError(str(exc)) from None
    result: dict[str, Any] = {"from_version": current.version if current else None, "to_version": target.version}
    serving = production_serving.move(ctx, target)
    if serving is not None:
        result["production_serving"] = serving
    return result
