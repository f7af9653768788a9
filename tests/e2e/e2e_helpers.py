"""Waits on the Streamlit page's own state, shared by the tests/e2e modules (imported by name:
pytest puts this folder on sys.path). No fixed sleeps: every step waits for what its action
shows on the page, then for the script run that showed it to end."""

from __future__ import annotations

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


def click_until(page: Any, button: Any, effect: Any, timeout_ms: float, retry_after_ms: float = 60_000) -> int:
    """Click `button` until `effect` (a locator) shows: once more if it has not after
    `retry_after_ms`, as a person would. Returns the number of clicks. Only for actions that are
    idempotent (replace the edit, export the same spec again). On a loaded server Streamlit has
    dropped a click whose run never came (the button stayed pressed, nothing changed); the test
    is about what the click does, so a second click, logged, is not a failure."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    button.click()
    try:
        effect.first.wait_for(timeout=min(retry_after_ms, timeout_ms))
        return 1
    except PlaywrightTimeout:
        print(f"no effect {retry_after_ms / 1000:.0f} s after the click: clicking again", flush=True)
    settled(page, timeout_ms)
    button.click()
    effect.first.wait_for(timeout=timeout_ms)
    return 2
