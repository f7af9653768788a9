"""A fresh start on an empty cache fills the pages by itself: Home shows the first start's steps
and progress, and when its job ends the Feature browser shows an SAE and Neurons a concept."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from apptest_helpers import app, ok, wait_for_job

from workbench.config import REPO_ROOT

MODELS_CACHE = Path(os.environ.get("WORKBENCH_TEST_MODELS", REPO_ROOT / "cache" / "models"))


@pytest.fixture(scope="module")
def empty_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cache = tmp_path_factory.mktemp("first-start-cache")
    MODELS_CACHE.mkdir(parents=True, exist_ok=True)
    (cache / "models").symlink_to(MODELS_CACHE.resolve(), target_is_directory=True)
    with pytest.MonkeyPatch.context() as env:  # undone after this module
        for key, value in (("WORKBENCH_MODEL", "tiny"), ("WORKBENCH_CACHE", str(cache)),
                           ("WORKBENCH_AUTOPREPARE", "quick")):
            env.setenv(key, value)
        yield cache


def texts(at) -> str:  # type: ignore[no-untyped-def]
    return "\n".join(str(e.value) for kind in ("markdown", "caption", "info", "warning") for e in getattr(at, kind))


def test_an_empty_cache_prepares_every_page_by_itself(empty_cache: Path) -> None:
    home = ok(app("app.py"))
    shown = texts(home)
    assert "Preparing the workbench" in shown and "steps ready" in shown, shown[:2000]
    assert "vocab projections of the most-used layers" in shown and "quick SAE" in shown
    assert "full SAE" not in shown  # WORKBENCH_AUTOPREPARE=quick leaves it out
    job = wait_for_job(lambda j: j.kind == "first-start", timeout_s=900)
    assert job.state == "done", job.error
    assert "4/5 quick SAE" in job.summary and "5/5 vocab projections of the other layers" in job.summary
    assert "full SAE" not in job.summary

    browser = ok(app("pages/1_Feature_browser.py"))
    assert "No SAE is catalogued" not in texts(browser)
    neurons = ok(app("pages/3_Neurons.py"))
    assert "No concept is built" not in texts(neurons)
    again = ok(app("app.py"))
    assert "Preparing the workbench" not in texts(again)  # everything is built: the panel is gone
