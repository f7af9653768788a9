"""WORKBENCH_PASSWORD gates every page until the right password is given."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]


def test_password_gate(ui_env, monkeypatch):
    monkeypatch.setenv("WORKBENCH_PASSWORD", "s3cret")
    at = AppTest.from_file(str(ROOT / "pages" / "1_Feature_browser.py"), default_timeout=120).run()
    assert not at.exception
    assert any("access password" in i.value for i in at.info)
    assert [t.key for t in at.text_input] == ["access_password"]  # nothing else rendered
    at.text_input(key="access_password").input("wrong").run()
    assert any("Wrong password" in e.value for e in at.error)
    at.text_input(key="access_password").input("s3cret").run()
    assert not at.error
    assert at.session_state["access_granted"]
