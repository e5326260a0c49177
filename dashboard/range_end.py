"""Where a page's time ranges end: the newest tick the knowledge base recorded, or now when it has none.

Not the wall clock: a knowledge base replayed in logical time (the demo, a
simulation) or one whose controller stopped shows its last days rather than
an empty present; for a running controller the newest tick is a tick ago.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlmodel import Session

from knowledge import queries


def range_end(session: Session) -> datetime:
    """Just after the newest tick (whole seconds, so the tick itself is inside a range that ends here)."""
    newest = queries.tick_span(session)[1]
    return (newest if newest is not None else datetime.now(timezone.utc)).replace(microsecond=0) + timedelta(seconds=1)
