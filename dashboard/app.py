"""The governance dashboard: sign in, then one page per question a person asks of the engine.

Run with ``mape dashboard --config mape.yaml`` (or ``streamlit run
dashboard/app.py`` with ``MAPE_CONFIG`` set). It reads the configuration's
knowledge base (``MAPE_DB_URL`` overrides it) through :mod:`knowledge`
queries, and acts only through :mod:`mape.access`, which checks the signed-in
person's role. Nothing is shown before sign-in.

Each page is a module with ``render(session, identity, context)``. The page
shown is kept in the address (``?page=Model&model=credit-risk``), so a link
from one page to another, or one sent to a colleague, opens it.
"""

from __future__ import annotations

from functools import partial

import streamlit as st
from sqlalchemy.engine import Engine

from dashboard import approvals, carbon, decisions, fleet, model, policies
from dashboard.context import PageContext
from dashboard.navigation import PAGE_KEY
from dashboard.signin import current, sign_out, signed_in
from knowledge.database import create_engine_for, session_scope
from mape.config import load_settings
from mape.errors import MapeError

PAGES = {"Fleet": fleet.render, "Model": model.render, "Decisions": decisions.render,
         "Approvals": approvals.render, "Policies": policies.render, "Carbon": carbon.render}


@st.cache_resource
def _engine(url: str) -> Engine:
    return create_engine_for(url)


def main() -> None:
    st.set_page_config(page_title="mape", layout="wide")
    try:
        settings = load_settings()
    except MapeError as exc:
        st.error(f"The configuration cannot be used: {exc}")
        return
    identity = signed_in(settings)
    if identity is None:
        return
    with st.sidebar:
        st.write(f"Signed in as **{identity.name}** ({identity.role.value})")
        if st.button("Sign out"):
            sign_out()
            st.rerun()
        if PAGE_KEY not in st.session_state:  # first run of this browser session: the page the address names
            asked = st.query_params.get("page")
            st.session_state[PAGE_KEY] = asked if asked in PAGES else next(iter(PAGES))
        page = st.radio("Page", list(PAGES), key=PAGE_KEY)
        st.query_params["page"] = page
        st.caption(f"knowledge base: {settings.db_url}")
    engine = _engine(settings.db_url)
    context = PageContext(engine, settings, partial(current, settings, identity))
    with session_scope(engine) as session:
        PAGES[page](session, identity, context)


main()
