"""Single sign-on: the identity provider says who the person is (Streamlit's st.user), the users file what they may do.

The provider's round trip is Streamlit's own (``st.login``); here the
harness plays a person the provider signed in (``AppTest.user``) and the
tests check what mape does with them: the claim matched to the users file,
the role it gives, a stranger refused, a missing claim named, and the
sign-in button drawn only where Streamlit's ``[auth]`` secrets exist.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from mape.access import Role, UsersFile
from tests.dashboard.app_harness import knowledge_base, open_app
from streamlit.testing.v1 import AppTest

AUTH = {"redirect_uri": "http://127.0.0.1:8501/oauth2callback", "cookie_secret": "s" * 32, "client_id": "mape",
        "client_secret": "secret", "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration"}


def _with_oidc(tmp_path: Path, **oidc: str) -> Path:
    config = knowledge_base(tmp_path)
    settings = yaml.safe_load(config.read_text())
    settings["access"]["oidc"] = oidc
    config.write_text(yaml.safe_dump(settings))
    UsersFile(tmp_path / "users.yaml").add("olga@example.com", Role.approver, None)
    return config


def _as(app: AppTest, **claims: object) -> AppTest:
    app.user.clear()
    app.user.update({"is_logged_in": True, **claims})
    app.run()
    assert not app.exception, app.exception
    return app


def test_a_person_the_provider_signed_in_gets_the_role_the_users_file_gives_their_email(tmp_path, monkeypatch):
    app = open_app(_with_oidc(tmp_path), monkeypatch)
    _as(app, email="olga@example.com", name="Olga")
    assert "Signed in as **olga@example.com** (approver)" in [m.value for m in app.sidebar.markdown]
    assert app.title[0].value == "Fleet"


def test_a_stranger_at_the_provider_sees_nothing_but_how_an_admin_adds_them(tmp_path, monkeypatch):
    app = _as(open_app(_with_oidc(tmp_path), monkeypatch), email="mallory@example.com")
    assert "mape users add mallory@example.com --role viewer --oidc-only" in app.error[0].value
    assert not app.title and [b.label for b in app.button] == ["Sign out"]


def test_the_claim_is_configurable_and_a_missing_one_is_named(tmp_path, monkeypatch):
    config = _with_oidc(tmp_path, claim="preferred_username")
    UsersFile(tmp_path / "users.yaml").add("olga", Role.admin, None)
    app = _as(open_app(config, monkeypatch), email="olga@example.com", preferred_username="olga")
    assert "Signed in as **olga** (admin)" in [m.value for m in app.sidebar.markdown]
    app = _as(open_app(config, monkeypatch), email="olga@example.com")
    assert "without a 'preferred_username' claim" in app.error[0].value and not app.title


def test_the_sign_on_button_is_drawn_where_streamlit_has_the_providers_secrets(tmp_path, monkeypatch):
    config = _with_oidc(tmp_path, label="Sign in with Example SSO")
    app = open_app(config, monkeypatch)
    assert "no [auth] section" in app.warning[0].value
    assert [b.label for b in app.button] == ["Sign in"]  # the users file's form alone
    monkeypatch.setenv("MAPE_CONFIG", str(config))
    app = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py"), default_timeout=30)
    app.secrets["auth"] = AUTH
    app.run()
    assert not app.exception and not app.warning
    assert [b.label for b in app.button] == ["Sign in", "Sign in with Example SSO"]
