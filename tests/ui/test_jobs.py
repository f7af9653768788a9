"""JobManager: background threads, progress files that outlive the manager, results, errors."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from workbench.jobs import JobBusyError, JobManager


def test_job_reports_progress_summary_and_result(tmp_path: Path) -> None:
    manager = JobManager(tmp_path)

    def body(progress):  # type: ignore[no-untyped-def]
        progress.stage("counting", total=3, unit="step")
        for _ in range(3):
            progress.advance(1)
        return "counted 3", {"answer": 42}

    job_id = manager.start("count", "Count", body)
    status = manager.wait(job_id, 10)
    assert status is not None and status.state == "done" and status.summary == "counted 3"
    assert status.done == 3 and status.fraction == 1.0
    assert manager.result(job_id) == {"answer": 42}
    # a new manager (a restarted server) reads the same file
    again = JobManager(tmp_path).status(job_id)
    assert again is not None and again.state == "done"


def test_failed_job_shows_the_error(tmp_path: Path) -> None:
    manager = JobManager(tmp_path)

    def body(progress):  # type: ignore[no-untyped-def]
        raise ValueError("no such concept")

    status = manager.wait(manager.start("x", "Broken", body), 10)
    assert status is not None and status.state == "failed" and "no such concept" in status.error


def test_one_job_per_kind_and_interrupted_after_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import workbench.jobs

    manager = JobManager(tmp_path)
    gate = threading.Event()
    job_id = manager.start("slow", "Slow", lambda p: (gate.wait(10), "ok")[1])
    with pytest.raises(JobBusyError):
        manager.start("slow", "Slow again", lambda p: "ok")
    assert manager.running("slow") == job_id
    # another process on this cache sees the job running while its progress file is fresh ...
    assert JobManager(tmp_path).status(job_id).state == "running"  # type: ignore[union-attr]
    # ... and interrupted once the file is older than a live job would leave it
    monkeypatch.setattr(workbench.jobs, "OTHER_PROCESS_FRESH_S", -1.0)
    assert JobManager(tmp_path).status(job_id).state == "interrupted"  # type: ignore[union-attr]
    monkeypatch.undo()
    gate.set()
    assert manager.wait(job_id, 10).state == "done"  # type: ignore[union-attr]
    assert manager.clear_finished() == 1 and manager.jobs() == []
