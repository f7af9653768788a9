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
