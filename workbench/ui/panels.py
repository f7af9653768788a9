"""Reusable page pieces: the job panel (this user's jobs, live), the edit sidebar, the access check."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import streamlit as st

from workbench.jobs import JobFn, JobStatus, QueueSummary
from workbench.models import ModelBundle
from workbench.store import Store
from workbench.ui import draft as drafts
from workbench.ui import identity, resources

if TYPE_CHECKING:
    from workbench.benchmark.scorecard import Scorecard


def _cancel(job_id: str, owner: str) -> None:
    resources.jobs().cancel(job_id, owner)


def _job_line(job: JobStatus, owner: str) -> None:
    icon = {"queued": ":material/schedule:", "running": ":material/hourglass_top:",
            "done": ":material/check_circle:", "failed": ":material/error:", "cancelled": ":material/cancel:",
            "interrupted": ":material/warning:"}[job.state]  # Material icons render without emoji fonts
    head = f"{icon} **{job.title}** · {job.state}" + ("" if job.state == "queued" else f" · {job.elapsed_s:.0f} s")
    if job.live:
        line, cancel = st.columns([6, 1])
        line.markdown(head)
        cancel.button("Cancel", key=f"job_cancel_{job.job_id}", on_click=_cancel,
                      args=(job.job_id, owner), help="Stop this job of yours: a queued one never starts, a running "
                      "one stops at its next progress step (finished slices are kept).")
    else:
        st.markdown(head)
    if job.state == "queued":
        wait = "time unknown (no finished job of this kind yet)" if job.wait_s is None else \
            f"about {_duration(job.wait_s)}"
        ahead = (job.position or 1) - 1
        st.caption(f"Waiting in the queue: {ahead} queued job(s) ahead of it; starts in {wait}.")
    elif job.state == "running":
        frac = job.fraction
        done = f"{job.done:,.0f}" + (f" / {job.total:,.0f}" if job.total else "")
        text = f"{job.stage} — {done} {job.unit}"
        if frac is None:
            st.caption(text)
        else:
            st.progress(frac, text=text)
    elif job.state in ("done", "cancelled"):
        st.caption(job.summary)
    elif job.state == "failed":
        st.error(f"{job.title} failed: {job.error}")
    else:
        st.caption("The server stopped while this job ran or waited; finished slices are kept, start it again "
                   "to resume.")


def _duration(seconds: float) -> str:
    for unit, size, up_to in (("s", 1, 90), ("min", 60, 90 * 60), ("h", 3600, 48 * 3600)):
        if seconds < up_to:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds / 86400:.0f} days"


def _others_line(summary: QueueSummary) -> str | None:
    """Other users' jobs, anonymously: how busy the queue is, never whose or what (with a job of
    this user's queued, the other users' jobs ahead of it)."""
    parts = []
    if summary.others_running:
        parts.append("another user's job is running" if summary.others_running == 1
                     else f"{summary.others_running} other users' jobs are running")
    if summary.mine_queued and summary.others_ahead:
        parts.append(f"{summary.others_ahead} job(s) ahead of yours")
    elif not summary.mine_queued and summary.others_queued:
        parts.append(f"{summary.others_queued} more waiting")
    return "The queue is busy: " + ", ".join(parts) + "." if parts else None


def job_panel(kinds: tuple[str, ...] | None = None, limit: int = 5,
              then: Callable[[], None] | None = None) -> None:
    """This user's jobs (of `kinds`) in full, with a Cancel button on queued and running ones,
    and one anonymous line about other users' jobs. Refreshes itself every second while one of
    this user's jobs is queued or running; reads only the files of the jobs it shows.

    `then` draws what depends on those jobs (a result, a download) inside the same fragment, so
    a job that ends shows its result in the panel's own refresh. Without it, a job that ends
    reruns the whole page once, for the results drawn elsewhere on it. Prefer `then`: a whole-page
    rerun that lands while the user is uploading a file or typing can cost them that input."""
    owner = identity.current_owner()
    manager = resources.jobs()
    live = any(j.live for j in manager.jobs(owner=owner, kinds=kinds, limit=limit))

    @st.fragment(run_every=1.0 if live else None)
    def _panel() -> None:
        jobs = manager.jobs(owner=owner, kinds=kinds, limit=limit)
        others = _others_line(manager.queue_summary(owner))
        if others:
            st.caption(f":material/groups: {others}")
        if not jobs:
            st.caption("No background jobs of yours yet.")
        for job in jobs:
            _job_line(job, owner)
        if then is not None:
            then()
            return
        finished = st.session_state.setdefault("_seen_running", set())
        for job in jobs:  # a job that just ended: rerun the page once so its results show
            if job.live:
                finished.add(job.job_id)
            elif job.job_id in finished:
                finished.discard(job.job_id)
                st.rerun(scope="app")

    _panel()


def start_job(kind: str, title: str, fn: JobFn) -> str:
    """Queue a background job owned by this session's user; returns its id (keep it in the
    session to read the job's result with `job_result`). It starts at once when a slot is free."""
    manager = resources.jobs()
    job_id = manager.start(kind, title, fn, owner=identity.current_owner())
    st.session_state.setdefault("_seen_running", set()).add(job_id)
    status = manager.status(job_id)
    if status is not None and status.state == "queued":
        st.toast(f"Queued: {title} ({(status.position or 1) - 1} job(s) ahead)")
    else:
        st.toast(f"Started: {title}")
    return job_id


def cancel_jobs(job_ids: list[str]) -> int:
    """Cancel those of this user's jobs that are still queued or running; returns how many."""
    manager = resources.jobs()
    owner = identity.current_owner()
    live = [j for j in job_ids if (s := manager.status(j, owner)) is not None and s.live]
    return sum(manager.cancel(j, owner) for j in live)


def owner_exports_panel() -> None:
    """This user's exports on the server: size, age, their quota and a delete button each.
    Nobody else's are listed (cache/exports/<owner>/)."""
    from workbench.exports.disk import MB, delete_owner_export, owner_exports

    settings = resources.settings()
    owner = identity.current_owner()
    rows = owner_exports(settings.exports_dir, owner)
    used = sum(size for _, size, _ in rows)
    limits = settings.exports
    with st.expander(f"Your exports: {len(rows)}, {used / MB:,.0f} MB of your {limits.quota_bytes / MB:,.0f} MB"):
        st.caption(f"Exports are deleted {limits.ttl_s / 86400:g} days after they were written; download what you "
                   "keep. Only you see yours.")
        for path, size, mtime in rows:
            c1, c2 = st.columns([4, 1])
            c1.markdown(f"`{path.name}` · {size / MB:,.1f} MB · written "
                        f"{_duration(max(0.0, time.time() - mtime))} ago")
            if c2.button("Delete", key=f"del_export_{path.name}"):
                delete_owner_export(settings.exports_dir, owner, path.name)
                st.rerun()


def job_result(job_id: str | None) -> Any:
    """The result of this user's job `job_id` once it finished (None before, or for a job that
    is not theirs). Kept in the session, one per job kind, so the page still has it after the
    server dropped its copy (`JobLimits.result_ttl_s`)."""
    if not job_id:
        return None
    kept: dict[str, tuple[str, Any]] = st.session_state.setdefault("_job_results", {})
    for held_id, value in kept.values():
        if held_id == job_id:
            return value
    manager = resources.jobs()
    owner = identity.current_owner()
    value = manager.result(job_id, owner)
    status = manager.status(job_id, owner) if value is not None else None
    if status is not None:
        kept[status.kind] = (job_id, value)
    return value


def scorecard_view(card: Scorecard) -> None:
    """A scorecard as the pages show it: the score, the verdict sentences (what broke is said
    plainly), the metric table (before / after / delta) and the side-by-side generations."""
    import pandas as pd

    c = card
    m1, m2 = st.columns([1, 3])
    m1.metric("score (harmonic mean of forget, specificity, coherence)", f"{c.score:.3f}")
    with m2:
        (st.success if c.passed else st.error)(c.headline)
        for verdict in c.verdicts:
            st.markdown("• " + verdict)
    st.dataframe(pd.DataFrame(c.rows()), hide_index=True, width="stretch")
    if c.generations:
        with st.expander(f"Generations, base vs edited ({len(c.generations)})"):
            st.dataframe(pd.DataFrame(c.generations), hide_index=True, width="stretch")


def sae_or_error(path: object, needed_for: str = "") -> object | None:
    """A catalogued SAE's object (loaded once per server), or None after saying on the page why
    its folder cannot be loaded (`needed_for`: what on the page needs it)."""
    from workbench.sae.sources import SAELoadError

    try:
        return resources.sae(str(path))
    except (SAELoadError, FileNotFoundError, OSError) as err:
        st.error(f"The SAE's folder cannot be loaded ({err})" + (f"; {needed_for} need it." if needed_for else "."))
        return None


def add_to_edit(op: object, rerun: bool = True) -> None:
    """Append to this session's edit; rerun so the sidebar (drawn first) shows it at once."""
    d = drafts.draft()
    d.add(op)
    st.session_state.setdefault("_toasts", []).append(f"Added to the edit: {drafts.describe(op)}")
    if rerun:
        st.rerun()


def edit_sidebar() -> None:
    d = drafts.draft()
    for text in st.session_state.pop("_toasts", []):
        st.toast(text)
    with st.sidebar:
        st.markdown(f"**Your edit** · {len(d.operations)} operation(s)")
        for op in d.operations[-6:]:
            st.caption("• " + drafts.describe(op))
        if d.operations:
            st.caption("Review and preview it on **Edit & preview**.")


def require_access() -> None:
    """On a shared server with WORKBENCH_PASSWORD set, ask for it once per session (constant-time
    comparison); with WORKBENCH_OIDC=1, require Streamlit's OIDC login ([auth] in secrets.toml);
    with neither the app is open (a laptop)."""
    import hmac
    import os

    if identity.oidc_enabled() and not st.user.is_logged_in:
        st.info("This workbench server asks you to log in (OIDC, configured in .streamlit/secrets.toml).")
        st.button("Log in", on_click=st.login)
        st.stop()
    password = os.environ.get("WORKBENCH_PASSWORD", "")
    if not password or st.session_state.get("access_granted"):
        identity.remember_browser()
        return
    st.info("This workbench server asks for an access password.")
    given = st.text_input("Access password", type="password", key="access_password")
    if given and hmac.compare_digest(given.encode(), password.encode()):
        st.session_state["access_granted"] = True
        st.rerun()
    if given:
        st.error("Wrong password.")
    st.stop()


def need_bundle_and_store() -> tuple[ModelBundle, Store]:
    """The shared bundle and store, or stop the page with a clear message (after the access
    check on a password-protected server). Starts the first start's background builds when
    something is missing, and shows their progress at the top of the page."""
    from workbench.store import StoreBusyError

    require_access()
    try:
        bundle = resources.bundle()
    except Exception as err:  # noqa: BLE001 - shown to the user
        st.error(f"The model could not be loaded: {err}")
        st.stop()
    try:
        store = resources.store()
    except StoreBusyError as err:
        st.error(str(err))
        st.stop()
    first_start_panel(bundle, store)
    return bundle, store


def first_start_panel(bundle: ModelBundle, store: Store) -> None:
    """While the first start builds, one line per step (done, running, waiting) and the running
    step's progress bar; refreshes itself, and reruns the page when a step lands so its new
    content shows. Says nothing once everything is built."""
    from workbench import first_start

    first_start.maybe_start(resources.jobs(), store, bundle, resources.settings())  # no-op when switched off
    plan = first_start.steps(store, bundle, first_start.config_from_env())
    if all(s.done for s in plan):
        return
    # Refresh only while a first start builds (here, or in another process on this cache: its job
    # file): with nothing building, nothing can land, and a fragment run per session every few
    # seconds is what a shared server cannot afford. A user's own build on Home reruns the page.
    building = any(j.live for j in resources.jobs().jobs(kinds=(first_start.JOB_KIND,), limit=1))

    @st.fragment(run_every=5.0 if building else None)
    def _panel() -> None:
        plan = first_start.steps(store, bundle, first_start.config_from_env())
        done = sum(s.done for s in plan)
        seen = st.session_state.setdefault("_first_start_done", done)
        if done != seen:
            st.session_state["_first_start_done"] = done
            st.rerun(scope="app")
        if done == len(plan):
            return
        job = next(iter(resources.jobs().jobs(kinds=(first_start.JOB_KIND,), limit=1)), None)
        with st.container(border=True):
            running = job is not None and job.state == "running"
            head = ("**Preparing the workbench** (first start, in the background; pages fill in as steps land)"
                    if running else "**Not everything is built yet**")
            st.markdown(f"{head} · {done} of {len(plan)} steps ready")
            marks = []
            current = next((s for s in plan if not s.done), None)
            for step in plan:
                icon = (":material/check_circle:" if step.done else
                        ":material/hourglass_top:" if running and step is current else ":material/schedule:")
                marks.append(f"{icon} {step.title} → *{step.page}*")
            st.caption("  \n".join(marks))
            if running and job is not None:
                text = f"{job.stage} — {job.done:,.0f}" + (f" / {job.total:,.0f}" if job.total else "") + f" {job.unit}"
                st.progress(job.fraction or 0.0, text=text)
            elif not first_start.enabled():
                st.caption("Automatic preparation is off (WORKBENCH_AUTOPREPARE=0): start the builds on Home, "
                           "or run `python -m workbench prepare --all`.")
            elif job is not None and job.state == "failed":
                st.error(f"The first start failed: {job.error}")

    _panel()
