"""The dashboard in a real browser over the demo's knowledge base: sign in, look around, approve the waiting request.

Debian's chromium, driven by playwright, against ``streamlit run`` on a
loopback port, over a copy of the knowledge base the demo filled (the demo's
own run stays as it was for the other end-to-end tests). A screenshot of each
page is saved under ``test-artifacts/dashboard/`` (or ``$MAPE_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from examples.credit.demo import create_engine
from knowledge.database import session_scope
from knowledge.tables import AuditEvent, Decision
from tests.e2e.browser import CHROMIUM_FLAGS, chromium_path, served_dashboard

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def shots() -> Path:
    directory = Path(os.environ.get("MAPE_TEST_ARTIFACTS", REPO / "test-artifacts")) / "dashboard"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def demo_copy(demo_run, tmp_path: Path) -> tuple[Path, str, int]:  # type: ignore[no-untyped-def]
    """A copy of the demo's directory, the demo user's password, and the decision waiting for approval."""
    ok, lines, directory = demo_run
    assert ok, "\n".join(lines)
    copy = tmp_path / "demo"
    shutil.copytree(directory, copy, ignore=shutil.ignore_patterns("prefect"))
    password = next(line for line in lines if "sign in as demo, password " in line).rsplit("password ", 1)[1]
    engine = create_engine(copy)
    with session_scope(engine) as session:
        (waiting,) = session.exec(select(Decision).where(Decision.status == "awaiting_approval")).all()
        decision_id = waiting.id
    engine.dispose()
    return copy, password, decision_id


@pytest.fixture
def browser() -> Iterator[object]:
    executable = chromium_path()
    if executable is None:
        pytest.fail("chromium is not installed (apt-get install -y chromium; .ci/services installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def _page(page, name: str, heading: str | None = None) -> None:  # type: ignore[no-untyped-def]
    """Pick ``name`` in the sidebar's page list and wait for its title."""
    page.locator('[data-testid="stSidebar"]').get_by_text(name, exact=True).click()
    page.get_by_role("heading", name=heading or name).first.wait_for(timeout=30_000)


def test_sign_in_look_around_and_approve_the_waiting_request_in_a_real_browser(demo_copy, browser, shots):
    directory, password, decision_id = demo_copy
    with served_dashboard(directory / "mape.yaml", directory / "streamlit.log") as address:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        page.goto(address)
        page.get_by_role("textbox", name="Name").fill("demo")
        page.get_by_role("textbox", name="Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text("Signed in as").wait_for()
        page.get_by_role("heading", name="Fleet").first.wait_for()
        page.locator('[data-testid="stDataFrame"]').first.wait_for()
        page.get_by_role("button", name="Open credit-risk").wait_for()  # the fleet's one model, first row
        page.screenshot(path=str(shots / "fleet.png"), full_page=True)

        page.get_by_role("button", name="Open credit-risk").click()  # in this tab: still signed in
        page.get_by_role("heading", name="Model").first.wait_for()
        drift = page.locator('[data-testid="stVegaLiteChart"]').first
        page.get_by_role("heading", name="Drift (overall)").wait_for()
        # the drift chart is drawn (its series), with the retrain decision of the drift policy marked on it
        drift.locator('[aria-label*="drift.share_drifted"]').first.wait_for(state="attached")
        retrain = drift.locator('[aria-label*="policy: retrain-on-drift; action: retrain; outcome: proposed"]')
        assert retrain.count() >= 1, drift.inner_html()[:2000]
        page.screenshot(path=str(shots / "model.png"), full_page=True)

        for name, heading in (("Decisions", "Decisions"), ("Policies", "Policies"),
                              ("Carbon", "Carbon and resources")):
            _page(page, name, heading)
            page.wait_for_timeout(1000)  # charts draw after their frames appear
            assert not page.locator('[data-testid="stException"]').count(), f"the {name} page failed"
            page.screenshot(path=str(shots / f"{name.lower()}.png"), full_page=True)

        _page(page, "Approvals")
        page.get_by_text(f"Decision {decision_id}: retrain on credit-risk").wait_for()
        page.screenshot(path=str(shots / "approvals.png"), full_page=True)
        page.get_by_role("textbox", name="Comment").fill("checked the last day's data")
        page.get_by_role("button", name="Approve").click()
        page.get_by_text("the next tick dispatches it").wait_for()
        page.screenshot(path=str(shots / "approved.png"), full_page=True)

    engine = create_engine(directory)
    with session_scope(engine) as session:
        decision = session.get(Decision, decision_id)
        approved = session.exec(select(AuditEvent).where(AuditEvent.kind == "decision.approved")).all()
    engine.dispose()
    assert decision.status == "approved" and decision.decided_by == "demo"
    assert [e.subject for e in approved] == [str(decision)]
