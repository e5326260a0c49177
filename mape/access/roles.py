"""Roles, the identity of a signed-in person, and the check every state-changing act makes first.

Three roles, each allowed what the one before it is: a **viewer** reads, an
**approver** also approves and rejects decisions that wait for a person, an
**admin** also pauses and resumes policies and models and changes modes.
The check runs where the act is carried out (not where a button is drawn),
so a page that shows a button to the wrong person still cannot act for them.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mape.errors import MapeError


class Role(str, Enum):
    """What a person may do; ordered: viewer < approver < admin."""

    viewer = "viewer"
    approver = "approver"
    admin = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, needed: Role) -> bool:
        """Whether this role may do what ``needed`` may."""
        return self.rank >= needed.rank


_RANKS = {Role.viewer: 0, Role.approver: 1, Role.admin: 2}


class Identity(BaseModel):
    """A signed-in person: name, role, and how they signed in (recorded in audit events)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1)
    role: Role
    via: Literal["password", "oidc", "local"] = Field(
        description="password: the users file; oidc: the dashboard's OpenID Connect sign-in; local: the CLI on a "
                    "machine with no users file configured (whoever runs it holds the keys).")

    def audit(self) -> dict[str, str]:
        """What audit events record about the person besides their name."""
        return {"role": self.role.value, "signed_in_via": self.via}


class AccessDenied(MapeError, PermissionError):
    """The person's role does not allow the act; the message names both."""


def require(identity: Identity, needed: Role, act: str) -> None:
    """Raise :class:`AccessDenied` unless ``identity``'s role allows ``needed``.

    >>> require(Identity(name="ann", role=Role.viewer, via="password"), Role.approver, "approve decision 3")
    Traceback (most recent call last):
    ...
    mape.access.roles.AccessDenied: ann (viewer) may not approve decision 3: that needs the approver role or higher
    """
    if not identity.role.allows(needed):
        raise AccessDenied(f"{identity.name} ({identity.role.value}) may not {act}: "
                           f"that needs the {needed.value} role or higher")
