"""The dashboard shows nothing before sign-in; signed in, it opens on the Fleet page; signing out hides it again."""

from __future__ import annotations

from pathlib import Path

from mape.access import UsersFile
from tests.dashboard.app_harness import knowledge_base, open_app, sign_in


def test_nothing_is_shown_before_sign_in_and_a_wrong_password_is_refused(tmp_path: Path, monkeypatch):
    app = open_app(knowledge_base(tmp_path), monkeypatch)
    assert [t.label for t in app.text_input] == ["Name", "Password"]
    assert not app.title and not app.dataframe and not app.success
    sign_in(app, "ann", "wrong password")
    assert app.error[0].value == "Unknown name or wrong password."
    assert not app.dataframe


def test_without_a_users_file_the_page_says_how_to_set_one_up_and_shows_nothing(tmp_path: Path, monkeypatch):
    app = open_app(knowledge_base(tmp_path, users=False), monkeypatch)
    assert "Sign-in is not configured" in app.error[0].value and "mape users add" in app.error[0].value
    assert not app.text_input and not app.dataframe


def test_signed_in_the_dashboard_opens_on_the_fleet_page_and_signing_out_hides_it(tmp_path: Path, monkeypatch):
    app = sign_in(open_app(knowledge_base(tmp_path), monkeypatch), "vic")
    assert "Signed in as **vic** (viewer)" in [m.value for m in app.sidebar.markdown]
    assert app.sidebar.radio(key="page").value == "Fleet" and [t.value for t in app.title] == ["Fleet"]
    (frame,) = [d.value for d in app.dataframe]
    assert list(frame["model"]) == ["./?page=Model&model=credit-risk"]
    assert list(frame["production"]) == [1] and list(frame["health"]) == ["🟢 healthy"]
    next(b for b in app.sidebar.button if b.label == "Sign out").click()
    app.run()
    assert [t.label for t in app.text_input] == ["Name", "Password"] and not app.dataframe


def test_a_person_removed_from_the_users_file_is_signed_out_at_the_next_click(tmp_path: Path, monkeypatch):
    config = knowledge_base(tmp_path)
    app = sign_in(open_app(config, monkeypatch), "ann")
    assert app.dataframe
    UsersFile(tmp_path / "users.yaml").remove("ann")
    app.run()
    assert [t.label for t in app.text_input] == ["Name", "Password"] and not app.dataframe


def test_a_tour_of_every_page_and_back_draws_each_without_an_error(tmp_path: Path, monkeypatch):
    """Pages share the address (``?model=``, ``?policy=``): one page's parameters must not break another's."""
    from tests.dashboard.app_harness import open_page

    pages = ["Fleet", "Model", "Decisions", "Approvals", "Policies", "Carbon"]
    app = sign_in(open_app(knowledge_base(tmp_path), monkeypatch), "ada")
    assert list(app.sidebar.radio(key="page").options) == pages
    for page in [*pages, *reversed(pages)]:
        open_page(app, page)
        assert app.title[0].value.startswith(page.split()[0]), page
