"""The job panel in two browser sessions (AppTest, no model): each user sees their own jobs in full
with a Cancel button, and of the other user's jobs only an anonymous line; each session has its
own owner id. The queue logic itself is tested on toy jobs in tests/unit/test_jobs_queue.py."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from workbench.ui.identity import SESSION_KEY

TIMEOUT_S = 30


def _panel_page() -> None:
    from workbench.ui import panels

    panels.job_panel(kinds=("toy",))


@pytest.fixture
def one_slot_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache (so a fresh job manager) whose queue runs one job at a time."""
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("WORKBENCH_MAX_RUNNING_JOBS", "1")
    monkeypatch.delenv("WORKBENCH_OIDC", raising=False)
    return tmp_path


def _session() -> AppTest:
    at = AppTest.from_function(_panel_page, default_timeout=TIMEOUT_S).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption])


def test_each_user_sees_their_own_jobs_and_only_a_count_of_others(one_slot_server: Path) -> None:
    from workbench.ui import resources

    alice, bob = _session(), _session()
    owner_a, owner_b = alice.session_state[SESSION_KEY], bob.session_state[SESSION_KEY]
    assert owner_a != owner_b
    assert "No background jobs of yours yet." in _texts(alice)

    manager = resources.jobs()
    gate = threading.Event()
    running = manager.start("toy", "Alice's secret erasure", lambda p: (gate.wait(TIMEOUT_S), p.advance(1), "ok")[2],
                            owner=owner_a)
    queued = manager.start("toy", "Alice's queued scorecard", lambda p: "ok", owner=owner_a)
    try:
        bob.run()
        seen = _texts(bob)
        assert "Alice" not in seen, seen
        assert "The queue is busy: another user's job is running, 1 more waiting." in seen, seen
        assert not bob.button, "no Cancel button for another user's job"
        assert manager.cancel(queued, owner_b) is False

        alice.run()
        seen = _texts(alice)
        assert "Alice's secret erasure" in seen and "Alice's queued scorecard" in seen
        assert "Waiting in the queue: 0 queued job(s) ahead of it" in seen, seen
        assert alice.session_state[SESSION_KEY] == owner_a, "an owner id is stable across reruns"
        alice.button(key=f"job_cancel_{queued}").click().run()
        assert not alice.exception, [e.value for e in alice.exception]
        assert manager.status(queued).state == "cancelled"  # type: ignore[union-attr]
        alice.button(key=f"job_cancel_{running}").click().run()
    finally:
        gate.set()
    final = manager.wait(running, TIMEOUT_S)
    assert final is not None and final.state == "cancelled"
    alice.run()
    assert "cancelled" in _texts(alice)


def test_a_logged_in_identity_becomes_a_safe_owner_token() -> None:
    from workbench.jobs import OWNER_PATTERN
    from workbench.ui.identity import owner_of_user

    owners = {name: owner_of_user(name) for name in ("a.b@lab.org", "a-b@lab.org", "../../etc", "x" * 300)}
    assert all(OWNER_PATTERN.fullmatch(o) for o in owners.values()), owners
    assert owners["a.b@lab.org"] != owners["a-b@lab.org"]
    assert owners["a.b@lab.org"].startswith("a-b-lab-org-")


def _owner_page() -> None:
    import streamlit as st

    from workbench.ui import identity

    identity.remember_browser()
    st.markdown(f"owner {identity.current_owner()}")


def test_an_anonymous_owner_is_kept_in_a_browser_cookie(monkeypatch: pytest.MonkeyPatch) -> None:
    """A page run from a browser (a request with headers) writes its new id into the cookie; the
    next load sends it back and keeps the owner; a forged cookie is not taken."""
    from types import SimpleNamespace

    from workbench.ui.identity import COOKIE

    monkeypatch.delenv("WORKBENCH_OIDC", raising=False)
    browser = SimpleNamespace(headers=[("Host", "lab-server:8501")], cookies={})
    monkeypatch.setattr("streamlit.runtime.context._get_client_context", lambda: browser)
    first = AppTest.from_function(_owner_page, default_timeout=TIMEOUT_S).run()
    owner = first.session_state[SESSION_KEY]
    scripts = [e.proto.body for e in first.get("html")]
    assert len(scripts) == 1 and f"{COOKIE}={owner};" in scripts[0], scripts

    browser.cookies = {COOKIE: owner}  # a reload: the browser sends the cookie back
    reload = AppTest.from_function(_owner_page, default_timeout=TIMEOUT_S).run()
    assert reload.session_state[SESSION_KEY] == owner and not reload.get("html")

    browser.cookies = {COOKIE: "server"}  # not an id this module made: a fresh one instead
    forged = AppTest.from_function(_owner_page, default_timeout=TIMEOUT_S).run()
    assert forged.session_state[SESSION_KEY] not in ("server", owner)
