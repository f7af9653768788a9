"""JobManager on toy job functions: owners, the fair queue, positions, cancel, who may read a
result, bounded state (result and file expiry on an injected clock), owned export folders.

No test sleeps: a job body blocks on an Event the test sets, and the test waits on the manager's
own state (`wait`, `status`)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import workbench.jobs.manager
from workbench.config import JobLimits
from workbench.edits.spec import AblateValueVectors, EditSpec, ModelRef
from workbench.jobs import SERVER_OWNER, JobManager, export_dir
from workbench.progress import FileProgress

TIMEOUT_S = 30


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def blocking(gate: threading.Event, entered: threading.Event | None = None) -> Callable[[FileProgress], str]:
    def body(progress: FileProgress) -> str:
        if entered is not None:
            entered.set()
        assert gate.wait(TIMEOUT_S), "the test never released the job"
        progress.advance(1)  # a cancelled job stops here
        return "released"

    return body


def recording(name: str, order: list[str]) -> Callable[[FileProgress], str]:
    def body(progress: FileProgress) -> str:
        order.append(name)
        return name

    return body


def one_slot(tmp_path: Path, **limits: float) -> JobManager:
    return JobManager(tmp_path, JobLimits(max_running=1, **limits))  # type: ignore[arg-type]


def test_job_reports_progress_summary_and_result(tmp_path: Path) -> None:
    manager = one_slot(tmp_path)

    def body(progress: FileProgress) -> tuple[str, dict[str, int]]:
        progress.stage("counting", total=3, unit="step")
        for _ in range(3):
            progress.advance(1)
        return "counted 3", {"answer": 42}

    job_id = manager.start("count", "Count", body, owner="alice")
    status = manager.wait(job_id, TIMEOUT_S)
    assert status is not None and status.state == "done" and status.summary == "counted 3"
    assert status.owner == "alice" and status.done == 3 and status.fraction == 1.0
    assert manager.result(job_id, "alice") == {"answer": 42}
    # a new manager (a restarted server) reads the same file, owner included
    again = JobManager(tmp_path).status(job_id)
    assert again is not None and again.state == "done" and again.owner == "alice"


def test_failed_job_shows_the_error(tmp_path: Path) -> None:
    manager = one_slot(tmp_path)

    def body(progress: FileProgress) -> str:
        raise ValueError("no such concept")

    status = manager.wait(manager.start("x", "Broken", body, owner="alice"), TIMEOUT_S)
    assert status is not None and status.state == "failed" and "no such concept" in status.error


def test_two_owners_jobs_of_one_kind_are_both_accepted_and_both_finish(tmp_path: Path) -> None:
    manager = one_slot(tmp_path)
    gate = threading.Event()
    a = manager.start("facts", "Fact set 'Paris'", blocking(gate), owner="alice")
    b = manager.start("facts", "Fact set 'Rome'", blocking(gate), owner="bob")  # refused before the queue
    assert manager.status(a).state == "running"  # type: ignore[union-attr]
    assert manager.status(b).state == "queued" and manager.status(b).position == 1  # type: ignore[union-attr]
    gate.set()
    assert manager.wait(a, TIMEOUT_S).state == "done"  # type: ignore[union-attr]
    assert manager.wait(b, TIMEOUT_S).state == "done"  # type: ignore[union-attr]


def test_the_queue_is_fair_across_owners_and_fifo_within_one(tmp_path: Path) -> None:
    """Owner A queues 3 jobs, then B queues 1: B's runs second, not fourth."""
    manager = one_slot(tmp_path)
    gate, order = threading.Event(), []
    a1 = manager.start("erase", "A1", lambda p: (order.append("A1"), blocking(gate)(p))[1], owner="alice")
    a2 = manager.start("erase", "A2", recording("A2", order), owner="alice")
    a3 = manager.start("erase", "A3", recording("A3", order), owner="alice")
    b1 = manager.start("erase", "B1", recording("B1", order), owner="bob")
    positions = {name: manager.status(job).position for name, job in (("A2", a2), ("A3", a3), ("B1", b1))}  # type: ignore[union-attr]
    assert positions == {"B1": 1, "A2": 2, "A3": 3}
    gate.set()
    for job in (a1, a2, a3, b1):
        assert manager.wait(job, TIMEOUT_S).state == "done"  # type: ignore[union-attr]
    assert order == ["A1", "B1", "A2", "A3"]


def test_queue_position_wait_estimate_and_what_others_see(tmp_path: Path) -> None:
    manager = one_slot(tmp_path)
    manager.wait(manager.start("scorecard", "warm-up", recording("w", []), owner="carol"), TIMEOUT_S)
    gate = threading.Event()
    running = manager.start("scorecard", "A's", blocking(gate), owner="alice")
    queued = manager.start("scorecard", "B's", recording("b", []), owner="bob")
    unknown_kind = manager.start("never-ran", "B's other", recording("c", []), owner="bob")
    status = manager.status(queued)
    assert status is not None and status.state == "queued" and status.position == 1
    assert status.wait_s is not None and status.wait_s >= 0.0  # a scorecard has finished before: a median
    assert manager.status(unknown_kind).wait_s is not None  # type: ignore[union-attr]  # its own kind is not ahead
    # ... but a job behind one of a never-finished kind has no estimate
    behind = manager.start("scorecard", "B's third", recording("d", []), owner="bob")
    assert manager.status(behind).position == 3 and manager.status(behind).wait_s is None  # type: ignore[union-attr]
    seen_by_bob = manager.queue_summary("bob")
    assert (seen_by_bob.others_running, seen_by_bob.others_ahead, seen_by_bob.mine_queued) == (1, 0, 3)
    seen_by_dave = manager.queue_summary("dave")
    assert (seen_by_dave.others_running, seen_by_dave.others_queued, seen_by_dave.mine_queued) == (1, 3, 0)
    gate.set()
    for job in (running, queued, unknown_kind, behind):
        assert manager.wait(job, TIMEOUT_S).state == "done"  # type: ignore[union-attr]


def test_cancel_a_queued_job_it_never_runs(tmp_path: Path) -> None:
    manager = one_slot(tmp_path)
    gate, order = threading.Event(), []
    first = manager.start("erase", "first", blocking(gate), owner="alice")
    second = manager.start("erase", "second", recording("second", order), owner="alice")
    third = manager.start("erase", "third", recording("third", order), owner="bob")
    assert not manager.cancel(second, "bob"), "only its owner cancels a job"
    assert manager.cancel(second, "alice")
    assert manager.status(second).state == "cancelled"  # type: ignore[union-attr]
    assert manager.status(third).position == 1  # type: ignore[union-attr]
    gate.set()
    assert manager.wait(third, TIMEOUT_S).state == "done"  # type: ignore[union-attr]
    assert manager.wait(first, TIMEOUT_S).state == "done"  # type: ignore[union-attr]
    assert order == ["third"]
    assert not manager.cancel(second, "alice"), "an ended job cannot be cancelled again"


def test_cancel_a_running_job_at_its_next_progress_call(tmp_path: Path) -> None:
    manager = one_slot(tmp_path)
    gate, entered = threading.Event(), threading.Event()
    after = threading.Event()

    def body(progress: FileProgress) -> tuple[str, str]:
        blocking(gate, entered)(progress)
        after.set()
        return "finished", "result"

    job = manager.start("erase", "long", body, owner="alice")
    queued = manager.start("erase", "next", recording("next", []), owner="bob")
    assert entered.wait(TIMEOUT_S)
    assert manager.status(job).state == "running"  # type: ignore[union-attr]
    assert manager.cancel(job, "alice")
    gate.set()
    final = manager.wait(job, TIMEOUT_S)
    assert final is not None and final.state == "cancelled" and not after.is_set()
    assert manager.result(job, "alice") is None
    assert manager.wait(queued, TIMEOUT_S).state == "done"  # type: ignore[union-attr]  # the slot was freed


def test_another_owner_cannot_read_a_result_or_see_the_job(tmp_path: Path) -> None:
    manager = one_slot(tmp_path)
    job = manager.start("facts", "Alice's secret concept", lambda p: ("ok", {"facts": 3}), owner="alice")
    assert manager.wait(job, TIMEOUT_S).state == "done"  # type: ignore[union-attr]
    assert manager.result(job, "bob") is None
    assert manager.status(job, owner="bob") is None
    assert manager.jobs(owner="bob") == []
    assert manager.result(job, "alice") == {"facts": 3}
    assert [j.title for j in manager.jobs(owner="alice")] == ["Alice's secret concept"]


def test_a_read_result_is_dropped_a_ttl_after_its_first_read_an_unread_one_after_its_end(tmp_path: Path) -> None:
    clock = Clock()
    manager = JobManager(tmp_path, JobLimits(max_running=1, result_ttl_s=600.0), clock=clock)
    read = manager.start("erase", "read", lambda p: ("ok", "payload-1"), owner="alice")
    unread = manager.start("erase", "unread", lambda p: ("ok", "payload-2"), owner="alice")
    manager.wait(read, TIMEOUT_S)
    manager.wait(unread, TIMEOUT_S)
    clock.now += 300.0
    assert manager.result(read, "alice") == "payload-1"  # first read: its TTL starts now
    clock.now += 350.0  # 650 s after the end, 350 s after the read
    manager.sweep()
    assert manager.result(read, "alice") == "payload-1"
    assert manager.result(unread, "alice") is None  # never read: gone 600 s after its end
    clock.now += 300.0  # 650 s after the read
    manager.sweep()
    assert manager.result(read, "alice") is None


def test_job_files_expire_at_start_up_and_in_the_sweep(tmp_path: Path) -> None:
    day = 86400.0
    clock = Clock(now=os.path.getmtime(tmp_path))
    limits = JobLimits(max_running=1, file_ttl_s=7 * day)
    manager = JobManager(tmp_path, limits, clock=clock)
    job = manager.start("vocab", "Vocab projections", lambda p: "built", owner="alice")
    assert manager.wait(job, TIMEOUT_S).state == "done"  # type: ignore[union-attr]
    path = tmp_path / f"{job}.json"
    os.utime(path, (clock.now, clock.now))
    clock.now += 6 * day
    manager.sweep()
    assert path.exists() and len(manager.jobs(owner="alice")) == 1
    clock.now += 2 * day
    assert JobManager(tmp_path, limits, clock=clock).jobs() == [] and not path.exists()  # at start-up

    # the clock is 8 days past the real time the next file is written at: sweep now, so that
    # start() (which sweeps once SWEEP_S has passed) cannot delete that file before it is aged
    manager.sweep()
    kept = manager.start("vocab", "Vocab projections", lambda p: "built", owner="alice")
    manager.wait(kept, TIMEOUT_S)
    os.utime(tmp_path / f"{kept}.json", (clock.now, clock.now))
    clock.now += 8 * day
    manager.sweep()  # what the pages trigger every SWEEP_S
    assert manager.jobs() == [] and not (tmp_path / f"{kept}.json").exists()


def test_listing_this_process_jobs_reads_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = one_slot(tmp_path)
    gate = threading.Event()
    done = manager.start("vocab", "done", lambda p: "ok", owner="alice")
    manager.wait(done, TIMEOUT_S)
    running = manager.start("vocab", "running", blocking(gate), owner="alice")
    queued = manager.start("vocab", "queued", blocking(gate), owner="alice")

    def no_reads(path: Path) -> None:
        raise AssertionError(f"read {path}")

    monkeypatch.setattr(workbench.jobs.manager, "read_progress", no_reads)
    assert [j.state for j in manager.jobs(owner="alice")] == ["queued", "running", "done"]
    monkeypatch.undo()
    gate.set()
    assert manager.wait(running, TIMEOUT_S).state == "done"  # type: ignore[union-attr]
    assert manager.wait(queued, TIMEOUT_S).state == "done"  # type: ignore[union-attr]


def test_twin_jobs_never_run_together_and_server_jobs_run_beside_the_queue(tmp_path: Path) -> None:
    manager = JobManager(tmp_path, JobLimits(max_running=2))
    gate = threading.Event()
    first = manager.start("vocab", "Vocab projections", blocking(gate), owner="alice")
    twin = manager.start("vocab", "Vocab projections", blocking(gate), owner="bob")
    other = manager.start("facts", "Fact set 'Rome'", blocking(gate), owner="carol")
    assert [manager.status(j).state for j in (first, twin, other)] == ["running", "queued", "running"]  # type: ignore[union-attr]
    server = manager.start("first-start", "First start", blocking(gate))  # owner SERVER_OWNER
    assert manager.status(server).state == "running" and manager.status(server).owner == SERVER_OWNER  # type: ignore[union-attr]
    assert manager.running("first-start") == server
    gate.set()
    for job in (first, twin, other, server):
        assert manager.wait(job, TIMEOUT_S).state == "done"  # type: ignore[union-attr]


def test_a_job_of_a_stopped_server_is_shown_as_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = one_slot(tmp_path)
    gate = threading.Event()
    job_id = manager.start("slow", "Slow", blocking(gate), owner="alice")
    # another process on this cache sees the job running while its progress file is fresh ...
    assert JobManager(tmp_path).status(job_id).state == "running"  # type: ignore[union-attr]
    # ... and interrupted once the file is older than a live job would leave it
    monkeypatch.setattr(workbench.jobs.manager, "OTHER_PROCESS_FRESH_S", -1.0)
    assert JobManager(tmp_path).status(job_id).state == "interrupted"  # type: ignore[union-attr]
    monkeypatch.undo()
    gate.set()
    assert manager.wait(job_id, TIMEOUT_S).state == "done"  # type: ignore[union-attr]
    assert manager.clear_finished() == 1 and manager.jobs() == []


def test_an_owner_must_be_a_safe_token(tmp_path: Path) -> None:
    manager = one_slot(tmp_path)
    for bad in ("../alice", "a/b", "", ".hidden", "a b"):
        with pytest.raises(ValueError, match="job owner"):
            manager.start("x", "x", lambda p: "ok", owner=bad)


def test_export_folders_are_per_owner_and_per_spec(tmp_path: Path) -> None:
    spec = EditSpec(name="../Paris erased", model=ModelRef(id="m", weights_sha256="s"),
                    operations=[AblateValueVectors(layer=0, neurons=[1])])
    alice = export_dir(tmp_path, "alice", spec, "checkpoint")
    bob = export_dir(tmp_path, "bob", spec, "checkpoint")
    assert alice != bob and alice.parent == tmp_path / "alice" and bob.parent == tmp_path / "bob"
    assert alice.name.endswith(spec.sha256()[:8]) and ".." not in alice.name
    assert export_dir(tmp_path, "alice", spec, "lora") not in (alice, bob)
    changed = spec.model_copy(update={"operations": [AblateValueVectors(layer=0, neurons=[2])]})
    assert export_dir(tmp_path, "alice", changed, "checkpoint") != alice
    with pytest.raises(ValueError, match="job owner"):
        export_dir(tmp_path, "../bob", spec, "checkpoint")


def test_the_store_records_who_saved_an_edit(tmp_path: Path) -> None:
    from workbench.store import open_store

    store = open_store(tmp_path / "s.duckdb")
    store.save_edit("e1-alice", "m", "paris", "{}", {"exported_to": "x"}, owner="alice")
    store.save_edit("e1-bob", "m", "paris", "{}", {"exported_to": "y"}, owner="bob")
    assert list(store.edits(owner="alice")["edit_id"]) == ["e1-alice"]
    assert set(store.edits("m")["owner"]) == {"alice", "bob"}
