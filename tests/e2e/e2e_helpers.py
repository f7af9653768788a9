"""Waits on the Streamlit page's own state, shared by the tests/e2e modules (imported by name:
pytest puts this folder on sys.path). No fixed sleeps: every step waits for what its action
shows on the page, then for the script run that showed it to end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from playwright.sync_api import expect


def settled(page: Any, timeout_ms: float) -> None:
    """The app's script run has ended (`data-test-script-state` of the app root, which the Streamlit
    frontend sets from the server's run messages). Call it after waiting for something the
    action's run shows, so the run that is waited for is that one and not the one before it."""
    app = page.get_by_test_id("stApp")
    expect(app).to_have_attribute("data-test-connection-state", "CONNECTED", timeout=timeout_ms)
    expect(app).to_have_attribute("data-test-script-state", "notRunning", timeout=timeout_ms)


def navigate(page: Any, label: str, heading: str, timeout_ms: float) -> None:
    """In-app navigation (keeps the session), via the sidebar's page links: the new page's heading
    shows, then its run ends."""
    page.locator('[data-testid="stSidebarNav"]').get_by_text(label, exact=True).click()
    page.get_by_role("heading", name=heading).first.wait_for(timeout=timeout_ms)
    settled(page, timeout_ms)


def until_shown(page: Any, act: Callable[[], object], effect: Any, timeout_ms: float,
                retry_after_ms: float = 60_000, on_retry: Callable[[], None] | None = None,
                acted: bool = False) -> int:
    """Do `act` (a click, an upload) until `effect` (a locator) shows: once more if it has not
    after `retry_after_ms`, as a person would (`acted`: the first time was already done, e.g.
    two users pressing at the same moment). Returns how many times it acted. Only for idempotent
    actions (replace the edit, export the same spec, select the same file). On a loaded server
    Streamlit has dropped a press or an upload in flight (nothing changed, no error); the test is
    about what the action does, so a second one, reported by `on_retry` (default: a printed
    line), is not a failure."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    if not acted:
        act()
    try:
        effect.first.wait_for(timeout=min(retry_after_ms, timeout_ms))
        return 1
    except PlaywrightTimeout:
        if on_retry is None:
            print(f"nothing showed {retry_after_ms / 1000:.0f} s after the action: doing it again", flush=True)
        else:
            on_retry()
    settled(page, timeout_ms)
    act()
    effect.first.wait_for(timeout=timeout_ms)
    return 2
