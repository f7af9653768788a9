"""Quiet serving: after the other e2e tests drove every page, the server log holds Streamlit's
start lines and our own progress lines, and no file-watcher noise or traceback."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from workbench.config import REPO_ROOT

pytestmark = pytest.mark.e2e
NOISE = re.compile(r"inotify|watchdog|reconciling|watch(es|ing)|traceback|exception|error", re.IGNORECASE)


def test_the_server_config_turns_the_file_watcher_off() -> None:
    server = tomllib.loads((REPO_ROOT / ".streamlit" / "config.toml").read_text())["server"]
    assert server["fileWatcherType"] == "none"
    assert {".venv", "cache"} <= set(server["folderWatchBlacklist"])


def test_server_log_has_no_watcher_noise(server: str, browser, server_log: Path) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()
    page.goto(server, wait_until="networkidle")
    page.close()
    lines = [line for line in server_log.read_text().splitlines() if line.strip()]
    assert any("You can now view your Streamlit app" in line for line in lines), lines[:5]
    noisy = [line for line in lines if NOISE.search(line)]
    assert noisy == [], noisy[:10]
