"""From nothing to an erased concept in the browser (tiny model): build the fact set, erase,
take the result into the edit, preview, and download the spec with its payload; the downloaded
pair loads and is bound by sha256."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from e2e_helpers import navigate, settled
from playwright.sync_api import expect

from workbench.edits.spec import load_spec
from workbench.methods.erase import METHODS

pytestmark = pytest.mark.e2e
WAIT = 300_000
METHOD_LABEL = "Localized optimisation, representation target only"


def description_snippet(label: str) -> str:
    """A plain run of words of the method's description (the caption the page shows once the
    method is chosen), without markup characters the page's Markdown could render differently."""
    what = next(m.what for m in METHODS.values() if m.label == label)
    return max((part.strip() for part in re.split(r"[^\w ,-]+", what)), key=len)


def test_erase_a_concept_preview_and_download(server: str, browser, artifacts: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1400, "height": 2600}, accept_downloads=True)
    p = context.new_page()
    try:
        p.goto(server)
        p.get_by_text("Cache and store").wait_for(timeout=WAIT)
        settled(p, WAIT)
        navigate(p, "Erase a concept", "Erase a concept", WAIT)
        box = p.get_by_label("Search corpus titles")
        box.fill("Paris")
        box.press("Enter")
        picker = p.get_by_role("combobox", name=re.compile("^Corpus article"))
        expect(picker).to_have_value(re.compile("Paris"), timeout=WAIT)  # the run with the new query filled it
        settled(p, WAIT)
        p.get_by_role("button", name="Build fact set").click()
        p.get_by_text("facts kept").wait_for(timeout=WAIT)  # polled by the job panel, no click needed
        settled(p, WAIT)
        # the random tiny model predicts no fact token with p >= 0.05: use the representation target
        p.locator('[data-testid="stSelectbox"]').filter(has_text="Method").click()
        p.get_by_role("option", name=METHOD_LABEL).click()
        p.get_by_text(description_snippet(METHOD_LABEL)).first.wait_for(timeout=WAIT)  # its description shows
        settled(p, WAIT)
        p.get_by_text("Run the scorecard afterwards").click()
        # the widget holds the new value: the Erase click's run is sent with it
        expect(p.get_by_role("checkbox", name="Run the scorecard afterwards")).not_to_be_checked(timeout=WAIT)
        p.get_by_role("button", name="Erase", exact=True).click()
        p.get_by_text("4 · Result").wait_for(timeout=WAIT)
        settled(p, WAIT)
        p.screenshot(path=str(artifacts / "erase-01-result.png"), full_page=True)
        p.get_by_role("button", name="Replace my edit with this").click()
        p.get_by_text("Your edit · 1 operation(s)").wait_for(timeout=WAIT)
        settled(p, WAIT)
        navigate(p, "Edit and preview", "Edit & preview", WAIT)
        p.get_by_text("optimised deltas on").first.wait_for(timeout=WAIT)
        p.get_by_role("button", name="Generate").click()
        p.get_by_text("decoded side by side in one batch").wait_for(timeout=WAIT)
        settled(p, WAIT)
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
