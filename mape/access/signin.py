"""Who runs a CLI command that changes state: the signed-in user of the users file, or the local operator.

With ``access.users_file`` set, a state-changing command needs ``--user NAME``
(or ``MAPE_USER``) and that person's password (``MAPE_PASSWORD``, for
scripts, or a prompt), and acts in the file's role for them: the same rights
as on the dashboard. Without a users file, the command acts as the local
operator with the admin role, under the name given (``--actor``, or the
login name): whoever can run it on this machine can edit its configuration
and database anyway.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable
from pathlib import Path

from mape.access.roles import AccessDenied, Identity, Role
from mape.access.users import UsersFile


def cli_identity(users_file: Path | None, *, user: str | None, actor: str | None = None,
                 password: Callable[[], str] | None = None) -> Identity:
    """The identity a CLI command acts as (see the module).

    Parameters
    ----------
    users_file : Path, optional
        ``access.users_file``; None: the local operator.
    user : str, optional
        The sign-in name (``--user`` or ``MAPE_USER``); needed with a users file.
    actor : str, optional
        The local operator's name, without a users file; default: the login name.
    password : callable, optional
        Asked for the password when ``MAPE_PASSWORD`` is not set; default: a hidden prompt.

    Raises
    ------
    AccessDenied
        A users file is set and no user is named, or the sign-in fails.
    ConfigError
        The users file is invalid.
    """
    if users_file is None:
        name = actor or os.environ.get("USER") or getpass.getuser() or "operator"
        return Identity(name=name, role=Role.admin, via="local")
    if not user:
        raise AccessDenied(f"sign in with --user NAME (or MAPE_USER): access.users_file is set ({users_file})")
    secret = os.environ.get("MAPE_PASSWORD")
    if secret is None:
        secret = (password or (lambda: getpass.getpass(f"password for {user}: ")))()
    identity = UsersFile(users_file).authenticate(user, secret)
    if identity is None:
        raise AccessDenied(f"sign-in failed for {user!r}: unknown user or wrong password (users file {users_file})")
    return identity
