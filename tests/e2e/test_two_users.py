"""Two real browser users on one server (tiny model) press 'Build fact set' and then 'Erase' at
the same moment, on different concepts. Both jobs run (queued one after the other or together,
never refused); each user sees only their own jobs, their own result and, after exporting it,
their own export; each keeps their identity (a cookie) across a reload."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import navigate, settled, until_shown
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e
WAIT = 300_000  # ms
ABLATE = "Zero contrast-ranked value vectors"  # 'ablate': the cheapest method
USERS = {"a": "Paris", "b": "London"}
FRESH = '[data-testid="stElementContainer"]:not([data-stale="true"])'  # the current run's elements
HAS_OWNER_COOKIE = "() => document.cookie.split('; ').some((c) => c.startsWith('workbench_owner=anon-'))"  # each user's concept: the job titles tell the users apart


def open_app(browser: Any, url: str) -> tuple[Any, Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 2400}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(WAIT)  # clicks too: on a loaded machine a page run can take minutes
    page.goto(url)
    page.get_by_text("Cache and store").wait_for(timeout=WAIT)
    settled(page, WAIT)
    page.wait_for_function(HAS_OWNER_COOKIE, timeout=WAIT)  # the page writes it with a script of its own
    return context, page


def owner_cookie(context: Any) -> str:
    return next(c["value"] for c in context.cookies() if c["name"] == "workbench_owner")


def choose(page: Any, concept: str) -> None:
    navigate(page, "Erase a concept", "Erase a concept", WAIT)
    box = page.get_by_label("Search corpus titles")
    box.fill(concept)
    box.press("Enter")
    expect(page.get_by_role("combobox", name=re.compile("^Corpus article"))).to_have_value(
        re.compile(concept), timeout=WAIT)
    settled(page, WAIT)


def ablate_without_scorecard(page: Any) -> None:
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Method").click()
    page.get_by_role("option", name=ABLATE).click()
    expect(page.get_by_role("combobox", name="Method", exact=True)).to_have_value(ABLATE, timeout=WAIT)
    settled(page, WAIT)
    box = page.get_by_role("checkbox", name="Run the scorecard afterwards")
    if box.is_checked():
        page.get_by_text("Run the scorecard afterwards").click()
        expect(box).not_to_be_checked(timeout=WAIT)
        settled(page, WAIT)


def job_lines(page: Any) -> list[str]:
    """The job panel lines the page shows (title · state ...)."""
    texts = page.locator('[data-testid="stElementContainer"]:not([data-stale="true"]) [data-testid="stMarkdown"]')
    return [t for t in texts.all_inner_texts() if re.search(r"· (queued|running|done|failed|cancelled)\b", t)]


def test_two_users_erase_at_the_same_moment(server: str, browser: Any, artifacts: Path) -> None:
    contexts, pages = {}, {}
    for user in USERS:
        contexts[user], pages[user] = open_app(browser, server)
    try:
        owners = {user: owner_cookie(ctx) for user, ctx in contexts.items()}
        assert owners["a"] != owners["b"]  # one anonymous id per browser
        for user, concept in USERS.items():
            choose(pages[user], concept)

        for page in pages.values():  # both presses at once: the second queues, it is not refused
            page.locator(FRESH).get_by_role("button", name="Build fact set").click()
        for page in pages.values():
            page.get_by_text("facts kept").wait_for(timeout=WAIT)
            settled(page, WAIT)
            ablate_without_scorecard(page)

        for page in pages.values():
            page.locator(FRESH).get_by_role("button", name="Erase", exact=True).click()
        for user, page in pages.items():
            page.get_by_text("4 · Result").wait_for(timeout=WAIT)
            settled(page, WAIT)
            page.screenshot(path=str(artifacts / f"two-users-{user}-result.png"), full_page=True)

        for user, page in pages.items():
            mine, theirs = USERS[user], next(c for u, c in USERS.items() if u != user)
            lines = job_lines(page)
            assert any(f"Erase '{mine}' (ablate)" in line and "· done" in line for line in lines), lines
            assert any(f"Fact set '{mine}'" in line for line in lines), lines
            assert not any(theirs in line for line in lines), lines  # nobody else's jobs
            assert page.get_by_text(f"Erase '{theirs}'").count() == 0

        # each takes their result into their edit and exports it; each lists only their own export
        for page in pages.values():
            # the click's own run put the edit in the draft (the sidebar said "Your edit · 0 ..."
            # before it: waiting on "Your edit · " alone let the navigation below cut that run off)
            until_shown(page, page.locator(FRESH).get_by_role("button", name="Replace my edit with this").click,
                        page.get_by_text(re.compile(r"Your edit · [1-9]\d* operation")), WAIT)
            settled(page, WAIT)
            navigate(page, "Edit and preview", "Edit & preview", WAIT)
        export = {user: page.locator(FRESH).get_by_role("button", name="Export edited checkpoint (safetensors)")
                  for user, page in pages.items()}
        for button in export.values():
            button.click()
        for user, page in pages.items():
            exported = page.get_by_text(re.compile(r"Your exports: 1,"))
            until_shown(page, export[user].click, exported, WAIT, retry_after_ms=120_000, acted=True)
            settled(page, WAIT)
            exported.first.click()
            mine, theirs = USERS[user], next(c for u, c in USERS.items() if u != user)
            page.get_by_text(re.compile(rf"erase-{mine}")).first.wait_for(timeout=WAIT)
            assert page.get_by_text(re.compile(rf"erase-{theirs}")).count() == 0
            page.screenshot(path=str(artifacts / f"two-users-{user}-export.png"), full_page=True)

        # opening the app again is a new Streamlit session but the same person: same cookie, same jobs
        page = pages["a"]
        page.goto(server)
        page.get_by_text("Cache and store").wait_for(timeout=WAIT)
        settled(page, WAIT)
        page.wait_for_function(HAS_OWNER_COOKIE, timeout=WAIT)
        assert owner_cookie(contexts["a"]) == owners["a"]
        expect(page.get_by_text("Erase 'Paris' (ablate)").first).to_be_visible(timeout=WAIT)  # Home's job list
        assert not any("London" in line for line in job_lines(page))
    except Exception:
        for user, page in pages.items():
            page.screenshot(path=str(artifacts / f"two-users-failure-{user}.png"), full_page=True)
        raise
    finally:
        for ctx in contexts.values():
            ctx.close()
