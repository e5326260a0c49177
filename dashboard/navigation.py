"""Moving between pages inside one browser tab, where the sign-in lives.

The signed-in person is kept in Streamlit's session, which a link opening a
new tab does not share (it asks to sign in again, then opens the page the
address names). So a page that leads to another, as the Fleet page leads to a
model, offers a button whose callback picks the page in the sidebar and the
widgets' values on it before the next drawing.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

PAGE_KEY = "page"  # the sidebar's page list (dashboard/app.py)
MODEL_KEY = "model_page_model"  # the Model page's model select box (dashboard/model.py)


def open_page(page: str, **widgets: Any) -> None:
    """A button's callback: show ``page`` next, its widgets (by key) set to ``widgets``."""
    st.session_state[PAGE_KEY] = page
    for key, value in widgets.items():
        st.session_state[key] = value
