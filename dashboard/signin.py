"""Sign-in before anything is shown: the users file's names and password hashes, and the role on every run.

With no users file configured the dashboard shows nothing but how to set
one up (``access.users_file``, ``mape users add``). A signed-in person's
role is read from the file again on every run of the page, so a demotion or
removal applies at their next click, not at their next sign-in. The role
shown here only decides which buttons are drawn; every act checks it again
where it is carried out (:mod:`mape.access`).
"""

from __future__ import annotations

import streamlit as st

from mape.access import AccessDenied, Identity, UsersFile
from mape.config import Settings
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
    return None


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
    st.session_state.pop(_KEY, None)
