"""Drive the running app in headless Chromium: search, add to edit, preview, export the spec;
two browser sessions at once never see each other's edit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from e2e_helpers import navigate, settled
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e
WAIT = 120_000  # ms


def open_app(browser, url: str):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.goto(url)
    page.get_by_text("Concept-erasure workbench").first.wait_for(timeout=WAIT)
    return context, page


def goto(page, label: str, heading: str) -> None:  # type: ignore[no-untyped-def]
    navigate(page, label, heading, WAIT)


def generate(page) -> None:  # type: ignore[no-untyped-def]
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("decoded side by side in one batch").wait_for(timeout=WAIT)
    settled(page, WAIT)


def test_search_add_preview_export_and_isolation(server: str, browser, search_token: str, artifacts: Path) -> None:  # type: ignore[no-untyped-def]
    ctx_a, a = open_app(browser, server)
    ctx_b, b = open_app(browser, server)
    try:
        a.get_by_text("Cache and store").wait_for(timeout=WAIT)
        settled(a, WAIT)
        a.screenshot(path=str(artifacts / "01-home.png"), full_page=True)

        goto(a, "Feature browser", "Feature browser")
        a.get_by_role("tab", name="Value vectors (W_out rows)").click()
        box = a.get_by_label("Search tokens")
        box.fill(search_token)
        box.press("Enter")
        a.get_by_text("value vector(s) match").wait_for(timeout=WAIT)
        settled(a, WAIT)
        a.get_by_role("button", name="Add to edit: ablate (zero)").click()
        a.get_by_text("Your edit · 1 operation(s)").wait_for(timeout=WAIT)
        settled(a, WAIT)
        a.screenshot(path=str(artifacts / "02-feature-browser.png"), full_page=True)

        goto(a, "Concept vectors", "Concept vectors")
        a.screenshot(path=str(artifacts / "03-concept-vectors.png"), full_page=True)
        goto(a, "Neurons", "Neurons")
        a.screenshot(path=str(artifacts / "04-neurons.png"), full_page=True)

        goto(a, "Edit and preview", "Edit & preview")
        a.get_by_text("Operations (1)").wait_for(timeout=WAIT)
        generate(a)
        a.screenshot(path=str(artifacts / "05-edit-preview.png"), full_page=True)

        # The other session, at the same time: its edit is empty and its preview is the base model.
        goto(b, "Edit and preview", "Edit & preview")
        b.get_by_text("Operations (0)").wait_for(timeout=WAIT)
        assert b.get_by_text("Your edit is empty").count() == 1
        generate(b)
        assert b.get_by_text("(no operations: same as base)").count() == 1
        b.screenshot(path=str(artifacts / "06-other-session.png"), full_page=True)
        assert a.get_by_text("Operations (1)").count() == 1

        with a.expect_download(timeout=WAIT) as info:
            a.get_by_role("button", name="Download edit spec (JSON)").click()
        spec = json.loads(Path(info.value.path()).read_text())
        assert spec["schema"] == "workbench.edit/1"
        assert [op["kind"] for op in spec["operations"]] == ["ablate_value_vectors"]

        # A corrupt spec pasted into the import box is refused with a clear message.
        b.get_by_label("…or paste spec JSON").fill("{not json")
        b.get_by_label("…or paste spec JSON").press("Control+Enter")
        # Wait for the run that took the pasted text to end, then press Import (always enabled:
        # the press carries the text area's value either way).
        settled(b, WAIT)
        import_button = b.get_by_role("button", name="Import", exact=True)
        expect(import_button).to_be_enabled(timeout=WAIT)
        import_button.click()
        b.get_by_text("Not imported").wait_for(timeout=WAIT)
        b.screenshot(path=str(artifacts / "07-bad-import.png"), full_page=True)
    except Exception:
        a.screenshot(path=str(artifacts / "failure-a.png"), full_page=True)
        b.screenshot(path=str(artifacts / "failure-b.png"), full_page=True)
        raise
    finally:
        ctx_a.close()
        ctx_b.close()
