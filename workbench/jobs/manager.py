"""Background jobs of the app: long builds run in threads of the server process, outside the
request path, and report through FileProgress JSON files under `Settings.jobs_dir`.

One server serves many researchers, so every job has an owner (`workbench.ui.identity`) and
waits in one fair queue instead of being refused:

- `start` always accepts. At most `max_running` users' jobs run at once (`JobLimits.max_running`,
  `WORKBENCH_MAX_RUNNING_JOBS`; by default 1 on CPU, 2 on CUDA). A free slot goes to the owner
  with the fewest running jobs, then to the one served longest ago, then to the oldest job:
  round-robin across owners (five queued jobs of one user never starve another user's single
  job) and first-in first-out within one owner.
- The same job twice (same kind and title, e.g. two users pressing "Vocab projections") is
  queued, not merged, but two such jobs never run at the same time: the second starts after the
  first and finds its slices built (every build is resumable).
- The server's own jobs (owner `SERVER_OWNER`: the first start) run beside the queue, so users'
  jobs never wait for an hour-long first build.
- An owner can cancel a queued or running job of theirs. Cancelling is cooperative: a running
  job stops with `JobCancelled` at its next progress call (`JobProgress`); every store write of
  the job bodies is one transaction per slice, so a cancelled job leaves complete slices only.
- A result is for its owner only (`result(job_id, owner)`); it is dropped `result_ttl_s` after
  its owner first read it, or after it finished if never read. Threads are forgotten when done.
  Job files older than `file_ttl_s` are deleted at start-up and by the periodic sweep, and the
  pages read from an in-memory index: a job of this process from memory, another one's file only
  when it is shown.

Jobs need no model lock: the base weights are never written (edits are adapters routed per batch
row), so builds and previews run side by side, and previews are never jobs: they never queue.

    manager = JobManager(settings.jobs_dir, settings.jobs)
    job_id = manager.start("prepare", "Prepare vocab + stats", lambda progress: ..., owner=owner)
    manager.jobs(owner=owner)   # [JobStatus, ...] newest first
"""

from __future__ import annotations

import re
import statistics
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from workbench.config import JobLimits
from workbench.progress import FileProgress, read_progress

JobState = Literal["queued", "running", "done", "failed", "cancelled", "interrupted"]
LIVE_STATES = ("queued", "running")
SERVER_OWNER = "server"  # the server's own jobs (the first start): run beside the users' queue
OWNER_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,79}")  # an owner names folders: no path characters
OTHER_PROCESS_FRESH_S = 120.0  # a progress file written this recently belongs to a live job
SWEEP_S = 30.0  # how often results, job files and the index are tidied (and other processes' files found)
DURATIONS_KEPT = 20  # finished jobs per kind whose median duration estimates a queue wait
# A job returns a one-line summary, or (summary, result) to keep a Python object for the page
# that started it (JobManager.result); results live in memory only.
JobFn = Callable[[FileProgress], "str | None | tuple[str, Any]"]


class JobCancelled(BaseException):  # like asyncio.CancelledError: a stop, not an error
    """Raised in a job's thread at its next progress call once its owner cancelled it. A
    BaseException, so a job body's `except Exception` cannot swallow it."""


def check_owner(owner: str) -> str:
    """`owner` if it is a safe token (it names folders), else ValueError with a sentence."""
    if not isinstance(owner, str) or not OWNER_PATTERN.fullmatch(owner):
        raise ValueError(f"A job owner must be 1-80 letters, digits, '-' or '_' (starting with a letter or "
                         f"digit), not {owner!r}.")
    return owner


def default_max_running(device: str) -> int:
    """Users' jobs that run at once when `JobLimits.max_running` is unset: 1 on CPU (a job uses
    every core), 2 on CUDA (builds and erasures of a small model leave the GPU room for another)."""
    if device == "cuda":
        return 2
    if device == "auto":
        import torch

        return 2 if torch.cuda.is_available() else 1
    return 1


class JobProgress(FileProgress):
    """The FileProgress of one job that also carries its cancellation: once the job is cancelled,
    its next `stage`, `advance` or `message` call from the job's own thread raises JobCancelled
    (calls from helper threads a job may start never raise)."""

    def __init__(self, path: Path, cancel: threading.Event) -> None:
        super().__init__(path)
        self._cancel = cancel
        self.thread_id: int | None = None  # the job's thread, set when it starts

    def check_cancelled(self) -> None:
        if self._cancel.is_set() and threading.get_ident() == self.thread_id:
            raise JobCancelled("cancelled by its owner")

    def stage(self, name: str, total: int | None = None, unit: str = "it") -> None:
        self.check_cancelled()
        super().stage(name, total, unit)

    def advance(self, n: int = 1, **info: Any) -> None:
        self.check_cancelled()
        super().advance(n, **info)

    def message(self, text: str) -> None:
        self.check_cancelled()
        super().message(text)

    def finish(self, *, message: str | None = None, **fields: Any) -> None:
        """The job's last write (state, summary, error), which a cancellation never interrupts."""
        self.state.update(fields)
        if message is not None:
            self._remember(message)
        self.close()


@dataclass(frozen=True)
class JobStatus:
    """What a page shows for one job (from memory for this process's jobs, else from its file).
    `position`: 1 for the queued job that starts next, 2 after it, ...; `wait_s`: a rough
    estimate of the wait from the median duration of finished jobs of the kinds ahead (None:
    no finished job of one of those kinds yet)."""

    job_id: str
    kind: str
    title: str
    owner: str
    state: JobState
    stage: str
    done: float
    total: float | None
    unit: str
    started: float
    updated: float
    summary: str
    error: str
    messages: list[str]
    position: int | None = None
    wait_s: float | None = None

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return max(0.0, min(1.0, self.done / self.total))

    @property
    def elapsed_s(self) -> float:
        if self.state == "queued":
            return 0.0
        end = self.updated if self.state != "running" else time.time()
        return max(0.0, end - self.started)

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


@dataclass(frozen=True)
class QueueSummary:
    """What one owner may know of everybody else's jobs on this server: counts, never titles."""

    others_running: int  # other users' jobs running now (the server's own not counted)
    others_ahead: int  # other users' queued jobs that start before this owner's next queued one
    others_queued: int  # all other users' queued jobs
    mine_queued: int  # this owner's queued jobs

    @property
    def busy(self) -> bool:
        return bool(self.others_running or self.others_queued)


@dataclass
class _Job:
    """A queued or running job of this process."""

    job_id: str
    kind: str
    title: str
    owner: str
    seq: int
    fn: JobFn
    progress: JobProgress
    cancel: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    state: JobState = "queued"
    started_at: float = 0.0
    beside_queue: bool = False


@dataclass
class _Entry:
    """The in-memory index line of a job file: enough to list jobs without reading files."""

    kind: str
    owner: str
    created: float
    seq: int
    final: JobStatus | None = None  # a finished job's last status, kept so its file is not reread


@dataclass
class _Result:
    value: Any
    owner: str
    finished_at: float
    read_at: float | None = None


class JobManager:
    """Queues, runs and lists the server's background jobs. One per server process
    (st.cache_resource). `clock` (seconds) decides result and file expiry; tests inject one."""

    def __init__(self, jobs_dir: Path, limits: JobLimits | None = None, *, device: str = "cpu",
                 clock: Callable[[], float] = time.time, on_sweep: Callable[[float], object] | None = None) -> None:
        self.jobs_dir = Path(jobs_dir)
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.limits = limits or JobLimits()
        self.max_running = self.limits.max_running or default_max_running(device)
        if self.max_running < 1:
            raise ValueError(f"At least one job must be able to run (max_running is {self.max_running}).")
        self._clock = clock
        self._on_sweep = on_sweep  # more tidying on the same schedule (the server's: expired exports)
        self._lock = threading.RLock()
        self._live: dict[str, _Job] = {}  # queued and running jobs of this process
        self._index: dict[str, _Entry] = {}  # every job file this manager knows
        self._results: dict[str, _Result] = {}
        self._durations: dict[str, deque[float]] = {}  # kind -> seconds of recent finished jobs
        self._served: dict[str, float] = {}  # owner -> when a job of theirs last started (clock)
        self._seq = 0
        self._last_sweep = float("-inf")
        self.sweep()

    # ------------------------------------------------------------------ starting and the queue
    def start(self, kind: str, title: str, fn: JobFn, *, owner: str = SERVER_OWNER) -> str:
        """Queue `fn(progress)` for `owner`; returns the job id at once. It starts now when a
        slot is free (the server's own jobs always start now), else when its turn comes."""
        check_owner(owner)
        with self._lock:
            self._seq += 1
            job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{uuid.uuid4().hex[:6]}"
            cancel = threading.Event()
            progress = JobProgress(self.jobs_dir / f"{job_id}.json", cancel)
            now = self._clock()
            progress.state.update(job_id=job_id, kind=kind, title=title, owner=owner, state="queued",
                                  summary="", error="", queued_at=now)
            progress.close()
            job = _Job(job_id, kind, title, owner, self._seq, fn, progress, cancel=cancel,
                       beside_queue=owner == SERVER_OWNER)
            self._live[job_id] = job
            self._index[job_id] = _Entry(kind, owner, now, self._seq)
            if job.beside_queue:
                self._launch(job)
            self._dispatch()
        self._maybe_sweep()
        return job_id

    def running(self, kind: str) -> str | None:
        """The id of a queued or running job of `kind` in this process, if any."""
        with self._lock:
            return next((j.job_id for j in self._live.values() if j.kind == kind), None)

    def cancel(self, job_id: str, owner: str) -> bool:
        """Cancel `owner`'s queued or running job: a queued one never starts, a running one stops
        at its next progress call. False when it is not `owner`'s or has already ended."""
        with self._lock:
            job = self._live.get(job_id)
            if job is None or job.owner != owner:
                return False
            job.cancel.set()
            if job.state == "queued":
                self._finish(job, "cancelled", summary="cancelled before it started")
        return True

    def _queued(self) -> list[_Job]:
        return sorted((j for j in self._live.values() if j.state == "queued"), key=lambda j: j.seq)

    def _running_users(self) -> list[_Job]:
        return [j for j in self._live.values() if j.state == "running" and not j.beside_queue]

    def _order(self) -> list[_Job]:
        """The queued jobs in the order they would start if slots freed one by one: fewest
        running jobs of the owner first, then the owner served longest ago, then the oldest job."""
        running: dict[str, int] = {}
        for j in self._running_users():
            running[j.owner] = running.get(j.owner, 0) + 1
        served = dict(self._served)
        waiting: dict[str, deque[_Job]] = {}
        for j in self._queued():
            waiting.setdefault(j.owner, deque()).append(j)
        order: list[_Job] = []
        tick = max(served.values(), default=0.0)
        while waiting:
            owner = min(waiting, key=lambda o: (running.get(o, 0), served.get(o, float("-inf")), waiting[o][0].seq))
            order.append(waiting[owner].popleft())
            if not waiting[owner]:
                del waiting[owner]
            running[owner] = running.get(owner, 0) + 1
            tick += 1e-6
            served[owner] = tick
        return order

    def _dispatch(self) -> None:
        """Start queued jobs while slots are free (call with the lock held). A job whose twin
        (same kind and title) runs waits for it."""
        while len(self._running_users()) < self.max_running:
            busy = {(j.kind, j.title) for j in self._live.values() if j.state == "running"}
            nxt = next((j for j in self._order() if (j.kind, j.title) not in busy), None)
            if nxt is None:
                return
            self._launch(nxt)

    def _launch(self, job: _Job) -> None:
        now = self._clock()
        job.state = "running"
        job.started_at = time.time()
        if not job.beside_queue:
            self._served[job.owner] = max(now, max(self._served.values(), default=now) + 1e-6)
        job.progress.state.update(state="running", started=job.started_at)
        job.progress.close()
        thread = threading.Thread(target=self._run, args=(job,), name=f"job-{job.job_id}", daemon=True)
        thread.start()

    def _run(self, job: _Job) -> None:
        job.progress.thread_id = threading.get_ident()
        state: JobState = "done"
        fields: dict[str, Any] = {}
        message = None
        result: Any = None
        has_result = False
        try:
            job.progress.check_cancelled()  # cancelled between its launch and this line
            out = job.fn(job.progress)
            summary = out
            if isinstance(out, tuple):
                summary, result = out
                has_result = True
            fields["summary"] = summary or "finished"
        except JobCancelled:
            state, fields["summary"] = "cancelled", "cancelled while it ran (every store write is whole: nothing half-written)"
        except BaseException as err:  # noqa: BLE001 - a job failure is reported, never raised into the server
            state, fields["error"] = "failed", f"{type(err).__name__}: {err}"
            message = traceback.format_exc()  # whole: the raising line is the innermost frame
        with self._lock:
            if has_result and state == "done":
                self._results[job.job_id] = _Result(result, job.owner, self._clock())
            if state == "done":
                self._record_duration(job.kind, time.time() - job.started_at)
            self._finish(job, state, message=message, **fields)

    def _finish(self, job: _Job, state: JobState, *, message: str | None = None, **fields: Any) -> None:
        """End a job (lock held): its last file write, its index line keeps its final status,
        the job and its thread are forgotten, and the freed slot goes to the next job."""
        job.state = state
        job.progress.finish(state=state, message=message, **fields)
        self._live.pop(job.job_id, None)
        entry = self._index.get(job.job_id)
        if entry is not None:
            entry.final = self._from_raw(dict(job.progress.state), job.owner)
        job.ended.set()
        self._dispatch()

    # ------------------------------------------------------------------ reading
    def jobs(self, owner: str | None = None, kinds: Iterable[str] | None = None, limit: int = 20) -> list[JobStatus]:
        """Jobs newest first: `owner`'s only when given (what a user's page shows), of `kinds`
        when given. Reads the files of at most `limit` jobs, and only of jobs not in memory."""
        self._maybe_sweep()
        wanted = None if kinds is None else set(kinds)
        with self._lock:
            picked = sorted(
                ((job_id, e) for job_id, e in self._index.items()
                 if (owner is None or e.owner == owner) and (wanted is None or e.kind in wanted)),
                key=lambda item: (item[1].created, item[1].seq), reverse=True)[:limit]
        out = [self.status(job_id) for job_id, _ in picked]
        return [s for s in out if s is not None]

    def status(self, job_id: str, owner: str | None = None) -> JobStatus | None:
        """One job's status (None when unknown, or when `owner` is given and it is not theirs)."""
        with self._lock:
            job = self._live.get(job_id)
            entry = self._index.get(job_id)
            if job is not None:
                if owner is not None and job.owner != owner:
                    return None
                return self._live_status(job)
            if entry is not None and entry.final is not None:
                return None if owner is not None and entry.owner != owner else entry.final
        raw = read_progress(self.jobs_dir / f"{job_id}.json")
        if raw is None or "job_id" not in raw:
            return None
        status = self._from_raw(raw, str(raw.get("owner", SERVER_OWNER)), foreign=True)
        if owner is not None and status.owner != owner:
            return None
        if entry is not None and status.state in ("done", "failed", "cancelled"):
            entry.final = status
        return status

    def _live_status(self, job: _Job) -> JobStatus:
        raw = dict(job.progress.state)
        raw["state"] = job.state
        position = wait_s = None
        if job.state == "queued":
            order = self._order()
            position = next(i for i, j in enumerate(order) if j is job) + 1
            wait_s = self._estimate_wait(order[:position - 1])
        return self._from_raw(raw, job.owner, position=position, wait_s=wait_s)

    def _estimate_wait(self, ahead: list[_Job]) -> float | None:
        """Seconds until a job with `ahead` queued before it starts: what the running users' jobs
        have left plus the jobs ahead, each at its kind's median duration, spread over the slots."""
        medians = {k: statistics.median(d) for k, d in self._durations.items() if d}
        total = 0.0
        for j in self._running_users():
            if j.kind not in medians:
                return None
            total += max(0.0, medians[j.kind] - (time.time() - j.started_at))
        for j in ahead:
            if j.kind not in medians:
                return None
            total += medians[j.kind]
        return total / self.max_running

    def _from_raw(self, raw: dict[str, Any], owner: str, *, foreign: bool = False, position: int | None = None,
                  wait_s: float | None = None) -> JobStatus:
        state: JobState = raw.get("state", "running")
        if foreign and state in LIVE_STATES:
            # Not a job of this process: another server on this cache runs it while it keeps
            # writing its progress file; otherwise the server that ran it stopped.
            fresh = time.time() - float(raw.get("updated", 0.0)) < OTHER_PROCESS_FRESH_S
            state = state if fresh else "interrupted"
        return JobStatus(
            job_id=raw["job_id"], kind=raw.get("kind", "?"), title=raw.get("title", ""), owner=owner,
            state=state, stage=raw.get("stage", ""), done=float(raw.get("done", 0)), total=raw.get("total"),
            unit=raw.get("unit", "it"), started=float(raw.get("started", 0.0)),
            updated=float(raw.get("updated", 0.0)), summary=raw.get("summary", ""),
            error=raw.get("error", ""), messages=list(raw.get("messages", [])), position=position, wait_s=wait_s,
        )

    def queue_summary(self, owner: str) -> QueueSummary:
        """Other users' jobs as counts only: what `owner`'s page may say about them."""
        with self._lock:
            others_running = sum(1 for j in self._running_users() if j.owner != owner)
            order = self._order()
            others_queued = sum(1 for j in order if j.owner != owner)
            mine = [i for i, j in enumerate(order) if j.owner == owner]
            ahead = sum(1 for j in order[:mine[0]] if j.owner != owner) if mine else 0
        return QueueSummary(others_running, ahead, others_queued, len(mine))

    def result(self, job_id: str, owner: str) -> Any:
        """The object `owner`'s finished job returned with its summary; None if it is not
        `owner`'s, not finished, returned none, or was dropped (`JobLimits.result_ttl_s`)."""
        self._maybe_sweep()
        with self._lock:
            kept = self._results.get(job_id)
            if kept is None or kept.owner != owner:
                return None
            if kept.read_at is None:
                kept.read_at = self._clock()
            return kept.value

    def wait(self, job_id: str, timeout_s: float = 600.0) -> JobStatus | None:
        """Block until a job ends (tests and benchmarks; pages never wait)."""
        with self._lock:
            job = self._live.get(job_id)
        if job is not None:
            job.ended.wait(timeout_s)
        return self.status(job_id)

    # ------------------------------------------------------------------ bounded state
    def _maybe_sweep(self) -> None:
        if self._clock() - self._last_sweep >= SWEEP_S:
            self.sweep()

    def sweep(self) -> None:
        """Drop expired results, delete job files older than `file_ttl_s`, index the files other
        processes wrote since the last sweep (each new file is read once), then call `on_sweep`."""
        now = self._clock()
        ttl = self.limits.result_ttl_s
        with self._lock:
            self._last_sweep = now
            for job_id, kept in list(self._results.items()):
                if now - (kept.read_at if kept.read_at is not None else kept.finished_at) >= ttl:
                    del self._results[job_id]
            live_owners = {j.owner for j in self._live.values()}
            for owner, when in list(self._served.items()):
                if owner not in live_owners and now - when >= ttl:
                    del self._served[owner]
            names = {p.stem: p for p in self.jobs_dir.glob("*.json")}
            for job_id in [j for j in self._index if j not in names and j not in self._live]:
                del self._index[job_id]
            for job_id, path in names.items():
                if job_id in self._live:
                    continue
                try:
                    old = now - path.stat().st_mtime >= self.limits.file_ttl_s
                except FileNotFoundError:
                    continue
                if old:
                    path.unlink(missing_ok=True)
                    self._index.pop(job_id, None)
                elif job_id not in self._index:
                    self._index_file(job_id, path)
        if self._on_sweep is not None:
            self._on_sweep(now)

    def _index_file(self, job_id: str, path: Path) -> None:
        raw = read_progress(path)
        if raw is None or "job_id" not in raw:
            return
        entry = _Entry(str(raw.get("kind", "?")), str(raw.get("owner", SERVER_OWNER)),
                       float(raw.get("queued_at", raw.get("started", 0.0))), 0)
        self._index[job_id] = entry
        if raw.get("state") == "done":
            self._record_duration(entry.kind, max(0.0, float(raw.get("updated", 0.0)) - float(raw.get("started", 0.0))))

    def _record_duration(self, kind: str, seconds: float) -> None:
        """A finished job's duration, among the last DURATIONS_KEPT of its kind (the wait estimates)."""
        self._durations.setdefault(kind, deque(maxlen=DURATIONS_KEPT)).append(seconds)

    def clear_finished(self, owner: str | None = None) -> int:
        """Delete the files of finished jobs (`owner`'s only when given); returns how many."""
        n = 0
        for status in self.jobs(owner=owner, limit=1_000_000):
            if not status.live:
                (self.jobs_dir / f"{status.job_id}.json").unlink(missing_ok=True)
                with self._lock:
                    self._index.pop(status.job_id, None)
                n += 1
        return n
