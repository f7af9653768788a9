"""From nothing to an erased concept in the browser (tiny model): build the fact set, erase,
take the result into the edit, preview, and download the spec with its payload; the downloaded
pair loads and is bound by sha256."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from workbench.edits.spec import load_spec

pytestmark = pytest.mark.e2e
WAIT = 300_000


def idle(page) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_timeout(400)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=WAIT)


def nav(page, label: str) -> None:  # type: ignore[no-untyped-def]
    page.locator('[data-testid="stSidebarNav"]').get_by_text(label, exact=True).click()
    idle(page)


def test_erase_a_concept_preview_and_download(server: str, browser, artifacts: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1400, "height": 2600}, accept_downloads=True)
    p = context.new_page()
    try:
        p.goto(server)
        p.get_by_text("Cache and store").wait_for(timeout=WAIT)
        nav(p, "Erase a concept")
        box = p.get_by_label("Search corpus titles")
        box.fill("Paris")
        box.press("Enter")
        idle(p)
        p.get_by_role("button", name="Build fact set").click()
        p.get_by_text("facts kept").wait_for(timeout=WAIT)  # polled by the job panel, no click needed
        idle(p)
        # the random tiny model predicts no fact token with p >= 0.05: use the representation target
        p.locator('[data-testid="stSelectbox"]').filter(has_text="Method").click()
        p.get_by_role("option", name="Localized optimisation, representation target only").click()
        idle(p)
        p.get_by_text("Run the scorecard afterwards").click()
        idle(p)
        p.get_by_role("button", name="Erase", exact=True).click()
        p.get_by_text("4 · Result").wait_for(timeout=WAIT)
        idle(p)
        p.screenshot(path=str(artifacts / "erase-01-result.png"), full_page=True)
        p.get_by_role("button", name="Replace my edit with this").click()
        p.get_by_text("Your edit · 1 operation(s)").wait_for(timeout=WAIT)
        nav(p, "Edit and preview")
        p.get_by_text("optimised deltas on").first.wait_for(timeout=WAIT)
        p.get_by_role("button", name="Generate").click()
        p.get_by_text("decoded side by side in one batch").wait_for(timeout=WAIT)
        idle(p)
        p.screenshot(path=str(artifacts / "erase-02-edit-preview.png"), full_page=True)
        with p.expect_download(timeout=WAIT) as spec_dl:
            p.get_by_role("button", name="Download edit spec (JSON)").click()
        with p.expect_download(timeout=WAIT) as payload_dl:
            p.get_by_role("button", name="Download its payload (safetensors)").click()
        spec_path = tmp_path / spec_dl.value.suggested_filename
        shutil.copy(spec_dl.value.path(), spec_path)
        raw = json.loads(spec_path.read_text())
        payload_bytes = Path(payload_dl.value.path()).read_bytes()
        assert raw["payload"]["file"] == payload_dl.value.suggested_filename
        assert raw["payload"]["sha256"] == hashlib.sha256(payload_bytes).hexdigest()
        (tmp_path / raw["payload"]["file"]).write_bytes(payload_bytes)
        spec, payload = load_spec(spec_path)
        assert [op.kind for op in spec.operations] == ["optimise_value_vectors"]
        assert set(payload) == spec.payload_names()
    except Exception:
        p.screenshot(path=str(artifacts / "erase-failure.png"), full_page=True)
        raise
    finally:
        context.close()
