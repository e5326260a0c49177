"""The local users file: salted hashes, roles, clear errors naming the entry and field, re-read when it changes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from mape.access import AccessDenied, Identity, Role, UsersFile, hash_password, require, verify_password
from mape.access.signin import cli_identity
from mape.errors import ConfigError


def test_users_sign_in_with_their_password_and_act_in_their_role(tmp_path: Path):
    users = UsersFile(tmp_path / "etc" / "users.yaml")
    users.add("ann", Role.approver, "correct horse battery")
    users.add("bob@example.com", Role.admin, None)
    assert users.authenticate("ann", "correct horse battery") == Identity(name="ann", role=Role.approver,
                                                                        via="password")
    assert users.authenticate("ann", "correct horse") is None
    assert users.authenticate("nobody", "correct horse battery") is None
    assert users.authenticate("bob@example.com", "") is None  # OIDC only: no password sign-in
    assert users.role_of("bob@example.com") is Role.admin and users.role_of("eve") is None
    text = users.path.read_text()
    assert "correct horse" not in text and "scrypt$16384$8$1$" in text
    assert stat.S_IMODE(os.stat(users.path).st_mode) == 0o600


def test_hashes_are_salted_and_a_malformed_hash_matches_nothing():
    first, second = hash_password("same password"), hash_password("same password")
    assert first != second and verify_password(first, "same password") and verify_password(second, "same password")
    for broken in ("scrypt$16384$8$1$notbase64!$x", "bcrypt$x", "", first[:-4]):
        assert not verify_password(broken, "same password")


def test_a_change_to_the_file_applies_at_the_next_sign_in(tmp_path: Path):
    path = tmp_path / "users.yaml"
    users = UsersFile(path)
    users.add("ann", Role.admin, "correct horse battery")
    assert users.authenticate("ann", "correct horse battery").role is Role.admin
    other = UsersFile(path)  # another process demotes her
    other.add("ann", Role.viewer, "correct horse battery")
    assert users.authenticate("ann", "correct horse battery").role is Role.viewer
    assert other.remove("ann") and not other.remove("ann")
    assert users.authenticate("ann", "correct horse battery") is None


@pytest.mark.parametrize(("document", "message"), [
    ({"users": [{"name": "ann", "role": "approver", "password": "hunter22"}]},
     "users.yaml: users[0].password: Value error, must be a hash written by `mape users add`"),
    ({"users": [{"name": "ann", "role": "viewer"}, {"name": "bob", "role": "owner"}]},
     "users.yaml: users[1].role: Input should be 'viewer', 'approver' or 'admin' (got 'owner')"),
    ({"users": [{"name": "ann", "role": "viewer"}, {"name": "ann", "role": "admin"}]},
     "users.yaml: users[1].name: names 'ann' twice"),
    ({"users": [{"name": "ann", "role": "viewer", "groups": ["x"]}]}, "users.yaml: users[0].groups: Extra inputs"),
    ({"people": []}, "must be a mapping with one key, users"),
    ({"users": "ann"}, "users.yaml: users: must be a list of users"),
])
def test_an_invalid_file_is_an_error_naming_the_entry_and_field_and_no_one_signs_in(tmp_path: Path, document,
                                                                                    message: str):
    path = tmp_path / "users.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError) as caught:
        UsersFile(path).authenticate("ann", "hunter22")
    assert message in str(caught.value)
    assert "hunter22" not in str(caught.value)  # a plain password put in the file is not echoed


def test_a_short_password_is_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="at least 8 characters"):
        UsersFile(tmp_path / "users.yaml").add("ann", Role.viewer, "short")
    assert not (tmp_path / "users.yaml").exists()


def test_roles_are_ordered():
    assert Role.admin.allows(Role.approver) and Role.approver.allows(Role.viewer)
    assert not Role.viewer.allows(Role.approver) and not Role.approver.allows(Role.admin)
    require(Identity(name="a", role=Role.admin, via="local"), Role.admin, "pause")
    with pytest.raises(AccessDenied, match=r"ann \(approver\) may not pause policy p: that needs the admin role"):
        require(Identity(name="ann", role=Role.approver, via="password"), Role.admin, "pause policy p")


def test_the_cli_signs_in_from_the_users_file_or_acts_as_the_local_operator(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("MAPE_PASSWORD", raising=False)
    local = cli_identity(None, user=None, actor="ops")
    assert local == Identity(name="ops", role=Role.admin, via="local")
    path = tmp_path / "users.yaml"
    UsersFile(path).add("ann", Role.approver, "correct horse battery")
    with pytest.raises(AccessDenied, match="sign in with --user NAME"):
        cli_identity(path, user=None, actor="ops")
    assert cli_identity(path, user="ann", password=lambda: "correct horse battery").role is Role.approver
    with pytest.raises(AccessDenied, match="sign-in failed for 'ann'"):
        cli_identity(path, user="ann", password=lambda: "wrong password")
    monkeypatch.setenv("MAPE_PASSWORD", "correct horse battery")
    assert cli_identity(path, user="ann", password=lambda: pytest.fail("no prompt with MAPE_PASSWORD")).name == "ann"
