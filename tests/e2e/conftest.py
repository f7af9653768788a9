"""The Streamlit server on the tiny model (prepared cache) and headless Chromium for e2e tests.
Starting the server and preparing its cache are workbench/local_server.py's, shared with
bench/server_load.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from workbench.config import REPO_ROOT
from workbench.local_server import CHROMIUM_ARGS, chromium, copy_cache, prepare_cache, serve

ARTIFACTS = REPO_ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def e2e_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The prepared tiny-model cache the e2e server runs on. A copy of it as prepared, before any
    server writes to it, goes to `e2e-pristine` beside it (the `pristine_cache` fixture)."""
    cache = tmp_path_factory.mktemp("e2e-cache")
    prepare_cache(cache, "tiny")
    copy_cache(cache, cache.parent / "e2e-pristine")
    return cache


@pytest.fixture(scope="session")
def pristine_cache(e2e_cache: Path) -> Path:
    """The e2e cache as prepared: a template for a test that starts its own server (the load
    bench copies it), never the folder the e2e server is writing to."""
    return e2e_cache.parent / "e2e-pristine"


@pytest.fixture(scope="session")
def search_token(e2e_cache: Path) -> str:
    from workbench.store import Store

    store = Store(e2e_cache / "workbench.duckdb", read_only=True)
    try:
        return str(store.df("SELECT token FROM value_vector_tokens WHERE side = 'top' AND rank = 0 "
                            "AND length(trim(token)) >= 3 LIMIT 1").iloc[0, 0]).strip()
    finally:
        store.close()


@pytest.fixture(scope="session")
def server_log(e2e_cache: Path) -> Path:
    """The e2e server's combined stdout and stderr."""
    return e2e_cache / "server.log"


@pytest.fixture(scope="session")
def server(e2e_cache: Path, search_token: str, server_log: Path) -> Iterator[str]:
    with serve(e2e_cache, "tiny", log_path=server_log) as running:
        yield running.url


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    path = chromium()
    if path is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); skipping e2e tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
