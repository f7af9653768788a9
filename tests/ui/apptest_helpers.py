"""AppTest helpers shared by the tests/ui modules (imported by name: pytest puts this folder
on sys.path)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from workbench.config import REPO_ROOT
from workbench.ui.draft import EditDraft

TIMEOUT = 300


def app(page: str, draft: EditDraft | None = None) -> AppTest:
    """Run a page (or app.py) once, with this session's edit preset when given."""
    at = AppTest.from_file(str(REPO_ROOT / page), default_timeout=TIMEOUT)
    if draft is not None:
        at.session_state["edit_draft"] = draft
    return at.run()


def ok(at: AppTest) -> AppTest:
    """The run raised nothing (a page error would be an st.exception element)."""
    assert not at.exception, [e.value for e in at.exception]
    return at
