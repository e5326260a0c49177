"""What a page needs beyond the open session: the knowledge base for its buttons, the settings, and the person now.

A button's callback runs before the page is drawn again, outside the page's
session, so it opens its own on :attr:`PageContext.engine`, and asks
:attr:`PageContext.identity` for the person as the users file says at that
moment (a demotion applies at the next click).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from mape.access import Identity
from mape.config import Settings


@dataclass(frozen=True)
class PageContext:
    """The knowledge base, the configuration and the signed-in person, for pages and their callbacks."""

    engine: Engine
    settings: Settings
    identity: Callable[[], Identity]
