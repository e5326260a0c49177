"""The local users file: names, roles and salted password hashes, for sign-in where no OpenID provider is set.

The file (``access.users_file`` in mape.yaml) is YAML::

    users:
      - name: ann
        role: approver                       # viewer | approver | admin
        password: scrypt$16384$8$1$<salt>$<hash>
      - name: bob@example.com                # no password: signs in through OIDC only
        role: admin

Passwords are never stored: each entry keeps an scrypt hash (the standard
library's, 2^14 iterations, 16 random salt bytes) written by ``mape users
add``. The file is written atomically with owner-only permissions and re-read
when it changes, so a user added or demoted takes effect at the next sign-in
without a restart. A file that cannot be read or is invalid is an error that
names the file, the entry and the field; sign-in then fails closed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mape.access.roles import Identity, Role
from mape.errors import ConfigError

SCHEME = "scrypt"
_N, _R, _P, _LENGTH = 2 ** 14, 8, 1, 32
MIN_PASSWORD = 8


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """An scrypt hash of ``password`` with a random salt, as stored in the users file.

    >>> stored = hash_password("correct horse", salt=b"0" * 16)
    >>> stored.split("$")[:4], verify_password(stored, "correct horse"), verify_password(stored, "wrong")
    (['scrypt', '16384', '8', '1'], True, False)
    """
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_LENGTH)
    return "$".join([SCHEME, str(_N), str(_R), str(_P), _b64(salt), _b64(digest)])


def verify_password(stored: str, password: str) -> bool:
    """Whether ``password`` matches the stored hash (compared in constant time); False for a malformed hash."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != SCHEME:
            return False
        expected = base64.b64decode(digest, validate=True)
        if len(expected) < _LENGTH:  # a cut hash would match a prefix of the key
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt, validate=True), n=int(n), r=int(r),
                             p=int(p), dklen=len(expected), maxmem=256 * 1024 * 1024)
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


_DUMMY = hash_password("a password nobody has", salt=b"mape-dummy-salt!")  # unknown names cost a hash too


class UserEntry(BaseModel):
    """One person of the users file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200, description="Sign-in name (an e-mail address for OIDC users).")
    role: Role = Field(description="viewer, approver or admin.")
    password: str | None = Field(None, description="scrypt hash written by `mape users add`; none: OIDC sign-in only.")

    @field_validator("password")
    @classmethod
    def _hashed(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(f"{SCHEME}$"):
            raise ValueError("must be a hash written by `mape users add` (scrypt$...), never a plain password")
        return value


class UsersFile:
    """The users file at ``path``: read when it changes, written atomically.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> users = UsersFile(pathlib.Path(tempfile.mkdtemp()) / "users.yaml")
    >>> users.add("ann", Role.approver, "s3cret-pass")
    >>> users.authenticate("ann", "s3cret-pass")
    Identity(name='ann', role=<Role.approver: 'approver'>, via='password')
    >>> users.authenticate("ann", "guess") is None, users.authenticate("nobody", "s3cret-pass") is None
    (True, True)
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._read: tuple[tuple[int, int], dict[str, UserEntry]] | None = None

    def entries(self) -> dict[str, UserEntry]:
        """Every user by name (empty when the file does not exist yet).

        Raises
        ------
        ConfigError
            The file cannot be read or is invalid (the message names the entry and field).
        """
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigError(f"cannot be read: {exc}", source=str(self.path)) from None
        stamp = (info.st_mtime_ns, info.st_size)
        if self._read is not None and self._read[0] == stamp:
            return self._read[1]
        entries = self._parse()
        self._read = (stamp, entries)
        return entries

    def _parse(self) -> dict[str, UserEntry]:
        try:
            document = yaml.safe_load(self.path.read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot be read: {exc}", source=str(self.path)) from None
        if not isinstance(document, dict) or set(document) - {"users"}:
            raise ConfigError("must be a mapping with one key, users (a list of name, role, password)",
                              source=str(self.path))
        listed = document.get("users") or []
        if not isinstance(listed, list):
            raise ConfigError("must be a list of users", source=str(self.path), field="users", value=listed)
        entries: dict[str, UserEntry] = {}
        for index, raw in enumerate(listed):
            try:
                entry = UserEntry.model_validate(raw)
            except ValidationError as exc:
                problem = exc.errors()[0]
                where = ".".join(str(p) for p in problem["loc"])
                raise ConfigError(problem["msg"], source=str(self.path),
                                  field=f"users[{index}]" + (f".{where}" if where else ""),
                                  value=None if where == "password" else problem.get("input")) from None
            if entry.name in entries:
                raise ConfigError(f"names {entry.name!r} twice", source=str(self.path), field=f"users[{index}].name")
            entries[entry.name] = entry
        return entries

    def authenticate(self, name: str, password: str) -> Identity | None:
        """The identity of ``name`` if ``password`` is theirs; None otherwise (the same work either way)."""
        entry = self.entries().get(name)
        stored = entry.password if entry is not None and entry.password is not None else _DUMMY
        matches = verify_password(stored, password)
        if entry is None or entry.password is None or not matches:
            return None
        return Identity(name=entry.name, role=entry.role, via="password")

    def role_of(self, name: str) -> Role | None:
        """The role of ``name`` (for a person signed in through OIDC); None when the file does not list them."""
        entry = self.entries().get(name)
        return None if entry is None else entry.role

    def add(self, name: str, role: Role, password: str | None) -> None:
        """Add ``name`` or replace their entry; ``password`` None: OIDC sign-in only."""
        if password is not None and len(password) < MIN_PASSWORD:
            raise ConfigError(f"a password needs at least {MIN_PASSWORD} characters", source=str(self.path),
                              field="password")
        entry = UserEntry(name=name, role=role, password=None if password is None else hash_password(password))
        entries = dict(self.entries())
        entries[name] = entry
        self._write(entries)

    def remove(self, name: str) -> bool:
        """Remove ``name``; False when the file does not list them."""
        entries = dict(self.entries())
        if entries.pop(name, None) is None:
            return False
        self._write(entries)
        return True

    def _write(self, entries: dict[str, UserEntry]) -> None:
        document: dict[str, Any] = {"users": [e.model_dump(mode="json", exclude_none=True) for e in entries.values()]}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            os.fchmod(handle, 0o600)
            with os.fdopen(handle, "w") as out:
                yaml.safe_dump(document, out, sort_keys=False)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self._read = None
