"""AppTest helpers shared by the tests/ui modules (imported by name: pytest puts this folder
on sys.path)."""

from __future__ import annotations

from collections.abc import Callable

from streamlit.testing.v1 import AppTest

from workbench.config import REPO_ROOT
from workbench.jobs import JobStatus
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


def wait_for_job(match: Callable[[JobStatus], bool], timeout_s: float = 600) -> JobStatus:
    """The newest job `match` picks (started by a page the test just drove), once it has ended."""
    from workbench.ui import resources

    manager = resources.jobs()
    job = next(j for j in manager.jobs() if match(j))
    final = manager.wait(job.job_id, timeout_s=timeout_s)
    assert final is not None, f"job {job.title!r} did not end within {timeout_s} s"
    return final
