"""A tiny-model cache prepared once per run (vocab, stats on 3000 tokens, the 'Paris' concept)
for the Streamlit AppTest tests: the same prepare as the end-to-end tests' and the load bench's
(workbench/local_server.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from workbench.local_server import MODELS_CACHE, prepare_cache

__all__ = ["MODELS_CACHE", "environ", "prepare_tiny_cache"]


def prepare_tiny_cache(cache: Path) -> None:
    """The tiny model's cache the page tests and the e2e tests run on (workbench/local_server.py)."""
    prepare_cache(cache, "tiny")


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
