"""AppTest helpers shared by the tests/ui modules (imported by name: pytest puts this folder
on sys.path)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streamlit.testing.v1 import AppTest

from workbench.config import REPO_ROOT
from workbench.jobs import JobStatus
from workbench.ui.draft import EditDraft

TIMEOUT = 300


def app(page: str, draft: EditDraft | None = None, state: dict[str, Any] | None = None) -> AppTest:
    """Run a page (or app.py) once, with this session's edit and other session state preset when given."""
    at = AppTest.from_file(str(REPO_ROOT / page), default_timeout=TIMEOUT)
    if draft is not None:
        at.session_state["edit_draft"] = draft
    for key, value in (state or {}).items():
        at.session_state[key] = value
    return at.run()


def ok(at: AppTest) -> AppTest:
    """The run raised nothing (a page error would be an st.exception element)."""
    assert not at.exception, [e.value for e in at.exception]
    return at


def job_ids() -> set[str]:
    """The ids of every job the server knows now: taken before an action, as `wait_for_job`'s
    `since`, it singles out the job the action starts."""
    from workbench.ui import resources

    return {j.job_id for j in resources.jobs().jobs(limit=100_000)}


def wait_for_job(match: Callable[[JobStatus], bool], timeout_s: float = 600, *,
                 since: set[str] | None = None) -> JobStatus:
    """The job `match` picks (started by a page the test just drove), once it has ended. With
    `since` (a `job_ids()` taken before the action) it must be the one job `match` picks among
    those started after it; without, the newest job `match` picks."""
    from workbench.ui import resources

    manager = resources.jobs()
    picked = [j for j in manager.jobs(limit=100_000) if match(j) and (since is None or j.job_id not in since)]
    assert picked, "no job matches"
    assert since is None or len(picked) == 1, [j.title for j in picked]
    job = picked[0]
    final = manager.wait(job.job_id, timeout_s=timeout_s)
    assert final is not None, f"job {job.title!r} did not end within {timeout_s} s"
    return final
