"""A tiny-model cache prepared once per run (vocab, stats on 3000 tokens, the 'Paris' concept)
for the Streamlit AppTest tests and the end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from workbench.config import REPO_ROOT

MODELS_CACHE = Path(os.environ.get("WORKBENCH_TEST_MODELS", REPO_ROOT / "cache" / "models"))


def prepare_tiny_cache(cache: Path) -> None:
    MODELS_CACHE.mkdir(parents=True, exist_ok=True)
    (cache / "models").symlink_to(MODELS_CACHE.resolve(), target_is_directory=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    subprocess.run(
        [sys.executable, "-m", "workbench", "--model", "tiny", "--cache", str(cache), "prepare",
         "--tokens", "3000", "--concept", "Paris"],
        cwd=REPO_ROOT, env=env, check=True, capture_output=True, timeout=600,
    )


@pytest.fixture(scope="session")
def ui_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("ui-cache")
    prepare_tiny_cache(cache)
    return cache


@pytest.fixture(scope="session")
def ui_env(ui_cache: Path) -> Iterator[Path]:
    """WORKBENCH_* pointing at the prepared tiny cache for in-process AppTest runs."""
    with environ(WORKBENCH_MODEL="tiny", WORKBENCH_CACHE=str(ui_cache)):
        yield ui_cache


@contextmanager
def environ(**values: str) -> Iterator[None]:
    """Set environment variables for a block and restore them after (AppTest runs in-process)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
