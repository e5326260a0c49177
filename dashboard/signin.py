"""Sign-in before anything is shown: the users file's names and password hashes, or single sign-on; roles on every run.

With no users file configured the dashboard shows nothing but how to set
one up (``access.users_file``, ``mape users add``). With ``access.oidc``,
a button signs in through the identity provider (Streamlit's ``st.login``,
configured in ``.streamlit/secrets.toml``); the provider says who the person
is (the configured claim, by default ``email``), and the users file what
they may do: someone the file does not list sees nothing but how an admin
adds them. A signed-in person's role is read from the file again on every
run of the page, so a demotion or removal applies at their next click, not
at their next sign-in. The role shown here only decides which buttons are
drawn; every act checks it again where it is carried out (:mod:`mape.access`).
"""

from __future__ import annotations

import streamlit as st

from mape.access import AccessDenied, Identity, UsersFile
from mape.config import OidcConfig, Settings
from mape.errors import MapeError

_KEY = "mape_identity"


def signed_in(settings: Settings) -> Identity | None:
    """The signed-in person, or None after drawing the sign-in form (the caller stops the page)."""
    path = settings.access.users_file
    if path is None:
        st.error("Sign-in is not configured, so nothing is shown. Name a users file in mape.yaml "
                 "(`access: {users_file: users.yaml}`) and add people with "
                 "`mape users add NAME --role viewer|approver|admin`.")
        return None
    users = UsersFile(path)
    try:
        users.entries()
    except MapeError as exc:
        st.error(f"The users file cannot be used, so no one can sign in: {exc}")
        return None
    oidc = settings.access.oidc
    if oidc is not None and st.user.get("is_logged_in", False):
        return _provider_identity(users, oidc)
    kept = st.session_state.get(_KEY)
    if kept is not None:
        role = users.role_of(kept["name"])
        if role is not None:
            return Identity(name=kept["name"], role=role, via=kept["via"])
        del st.session_state[_KEY]  # removed from the file since: signed out
    with st.form("sign-in"):
        st.subheader("Sign in")
        name = st.text_input("Name")
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Sign in")
    if submitted:
        identity = users.authenticate(name.strip(), password)
        if identity is None:
            st.error("Unknown name or wrong password.")
            return None
        st.session_state[_KEY] = {"name": identity.name, "via": identity.via}
        st.rerun()  # draw the page again without the form, now signed in
    if oidc is not None:
        _provider_button(oidc)
    return None


def _provider_button(oidc: OidcConfig) -> None:
    """The single sign-on button, or why there is none (Streamlit's ``[auth]`` secrets are missing)."""
    section = "auth" if oidc.provider is None else f"auth.{oidc.provider}"
    try:
        auth = dict(st.secrets.get("auth") or {})
    except FileNotFoundError:  # no secrets.toml at all (StreamlitSecretNotFoundError)
        auth = {}
    configured = bool(auth) if oidc.provider is None else oidc.provider in auth
    if not configured:
        st.warning(f"Single sign-on is configured (access.oidc) but .streamlit/secrets.toml has no [{section}] "
                   "section (redirect_uri, cookie_secret, client_id, client_secret, server_metadata_url), "
                   "so only the users file's passwords sign in.")
        return
    st.button(oidc.label, key="sign-in-oidc", on_click=st.login, args=(oidc.provider,) if oidc.provider else ())


def _provider_identity(users: UsersFile, oidc: OidcConfig) -> Identity | None:
    """The person the identity provider signed in, in the role the users file gives them; None if it gives none."""
    claimed = st.user.get(oidc.claim)
    if not claimed:
        st.error(f"The identity provider signed you in without a {oidc.claim!r} claim, which the users file's "
                 f"names are matched on (access.oidc.claim); ask an admin.")
        st.button("Sign out", key="sign-out-oidc", on_click=st.logout)
        return None
    name = str(claimed)
    role = users.role_of(name)
    if role is None:
        st.error(f"{name} is signed in at the identity provider, but the users file does not list them, so "
                 f"nothing is shown. An admin adds them with `mape users add {name} --role viewer --oidc-only`.")
        st.button("Sign out", key="sign-out-oidc", on_click=st.logout)
        return None
    return Identity(name=name, role=role, via="oidc")


def current(settings: Settings, fallback: Identity) -> Identity:
    """The signed-in person as the users file says now (for a button's callback, which runs before the page).

    Raises
    ------
    AccessDenied
        They were removed from the file since the page was drawn.
    """
    path = settings.access.users_file
    role = None if path is None else UsersFile(path).role_of(fallback.name)
    if role is None:
        raise AccessDenied(f"{fallback.name} is no longer in the users file: sign in again")
    return Identity(name=fallback.name, role=role, via=fallback.via)


def sign_out() -> None:
    """Forget the person; one signed in at the identity provider is signed out there too (``st.logout``)."""
    st.session_state.pop(_KEY, None)
    if st.user.get("is_logged_in", False):
        st.logout()
