"""People and their rights: who signs in, what role they hold, and the state-changing acts a role allows.

The dashboard and the CLI both go through here, so a person has the same
rights on either: :mod:`mape.access.roles` (viewer, approver, admin and the
check), :mod:`mape.access.users` (the local users file with salted password
hashes), :mod:`mape.access.signin` (who runs a CLI command) and
:mod:`mape.access.approvals` (approving and rejecting gated decisions).
"""

from mape.access.approvals import approve, reject
from mape.access.roles import AccessDenied, Identity, Role, require
from mape.access.users import UsersFile, hash_password, verify_password

__all__ = ["AccessDenied", "Identity", "Role", "UsersFile", "approve", "hash_password", "reject", "require",
           "verify_password"]
