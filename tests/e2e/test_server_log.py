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
# Streamlit's own transport traceback when a browser page closes mid-handshake ("Exception in ASGI
# application ... WebSocket is not connected"): timing of the browser, not an error of the app
TRANSPORT = re.compile(r"WebSocket is not connected|WebSocketDisconnect|WebSocketClosedError|StreamClosedError|"
                       r"Stream is closed|ClientDisconnected")
CONTINUES = re.compile(r"^(\s|Traceback|During handling|The above exception|[\w.]+(Error|Exception|Exit|Closed)\b|$)")
OUR_FRAME = re.compile(r'File ".*(/workbench/|/pages/|app\.py)')


def app_noise(lines: list[str]) -> list[str]:
    """The noisy lines of a server log, less whole traceback blocks that are Streamlit's transport
    closing under a departing browser (a block mentions the closed socket and no frame of ours)."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        if not NOISE.search(lines[i]):
            i += 1
            continue
        block = [lines[i]]
        i += 1
        while i < len(lines) and CONTINUES.match(lines[i]) and not _new_traceback(block, lines[i]):
            block.append(lines[i])
            i += 1
        text = "\n".join(block)
        if TRANSPORT.search(text) and not OUR_FRAME.search(text):
            continue
        out += [line for line in block if NOISE.search(line)]
    return out


def _new_traceback(block: list[str], line: str) -> bool:
    """A 'Traceback' line starts a block of its own unless Python chains it to the one before
    ('During handling of the above exception ...' just above it)."""
    chained = any(x.startswith(("During handling", "The above exception")) for x in block[-2:])
    return line.startswith("Traceback") and len(block) > 1 and not chained


def test_transport_tracebacks_are_told_apart_from_ours() -> None:
    transport = ["Exception in ASGI application", "Traceback (most recent call last):",
                 '  File "/x/starlette/websockets.py", line 1, in send', "    raise RuntimeError(...)",
                 'RuntimeError: WebSocket is not connected. Need to call "accept" first.']
    ours = ["Traceback (most recent call last):", '  File "/repo/workbench/jobs.py", line 9, in run',
            "    raise ValueError", "ValueError: WebSocket is not connected, and the job broke"]
    assert app_noise(["  You can now view your Streamlit app", *transport]) == []
    assert app_noise([*transport, *ours]) == [ours[0], ours[2], ours[3]]
    chained = [*transport[1:], "", "During handling of the above exception, another exception occurred:", "", *ours]
    assert app_noise(chained) != []  # one chained block with a frame of ours is ours
    assert app_noise(["2026 inotify watch limit reached"]) == ["2026 inotify watch limit reached"]


def test_the_server_config_turns_the_file_watcher_off() -> None:
    server = tomllib.loads((REPO_ROOT / ".streamlit" / "config.toml").read_text())["server"]
    assert server["fileWatcherType"] == "none"
    assert {".venv", "cache"} <= set(server["folderWatchBlacklist"])


def test_the_server_config_turns_the_per_run_full_collection_off() -> None:
    # Streamlit's default gc.collect() after every script run held the GIL 0.3-0.45 s per run and
    # stalled 8 sessions (docs/benchmarks.md)
    runner = tomllib.loads((REPO_ROOT / ".streamlit" / "config.toml").read_text())["runner"]
    assert runner["postScriptGC"] is False


def test_server_log_has_no_watcher_noise(server: str, browser, server_log: Path) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()
    page.goto(server, wait_until="networkidle")
    page.close()
    lines = [line for line in server_log.read_text().splitlines() if line.strip()]
    assert any("You can now view your Streamlit app" in line for line in lines), lines[:5]
    noisy = app_noise(lines)
    assert noisy == [], noisy[:10]
