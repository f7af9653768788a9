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
KEYS = ("WORKBENCH_MODEL", "WORKBENCH_CACHE", "WORKBENCH_AUTOPREPARE")


@pytest.fixture(scope="module")
def empty_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cache = tmp_path_factory.mktemp("first-start-cache")
    MODELS_CACHE.mkdir(parents=True, exist_ok=True)
    (cache / "models").symlink_to(MODELS_CACHE.resolve(), target_is_directory=True)
    old = {k: os.environ.get(k) for k in KEYS}
    os.environ.update(WORKBENCH_MODEL="tiny", WORKBENCH_CACHE=str(cache), WORKBENCH_AUTOPREPARE="quick")
    yield cache
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def texts(at) -> str:  # type: ignore[no-untyped-def]
    return "\n".join(str(e.value) for kind in ("markdown", "caption", "info", "warning") for e in getattr(at, kind))


def test_an_empty_cache_prepares_every_page_by_itself(empty_cache: Path) -> None:
    home = ok(app("app.py"))
    shown = texts(home)
    assert "Preparing the workbench" in shown and "steps ready" in shown, shown[:2000]
    assert "vocab projections of every value vector" in shown and "quick SAE" in shown
    assert "full SAE" not in shown  # WORKBENCH_AUTOPREPARE=quick leaves it out
    job = wait_for_job(lambda j: j.kind == "first-start", timeout_s=900)
    assert job.state == "done", job.error
    assert "5/" not in job.summary and "4/4 quick SAE" in job.summary

    browser = ok(app("pages/1_Feature_browser.py"))
    assert "No SAE is catalogued" not in texts(browser)
    neurons = ok(app("pages/3_Neurons.py"))
    assert "No concept is built" not in texts(neurons)
    again = ok(app("app.py"))
    assert "Preparing the workbench" not in texts(again)  # everything is built: the panel is gone
