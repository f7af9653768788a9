"""Server load: N users in headless Chromium on one real `streamlit run app.py`, for a set time.

    python bench/server_load.py --users 2 --minutes 2 --model tiny
    python bench/server_load.py --users 4 --minutes 5 --model embedded

The server runs on a working copy of a prepared cache (`--cache DIR`; by default cache/load-<model>,
prepared there with `python -m workbench prepare` on first use: vocab, statistics on 3000 tokens,
the 'Paris' concept), headless on a free port, with the background first start off
(WORKBENCH_AUTOPREPARE=0: the cache is prepared) and finished job results kept in the server's
memory for `--result-ttl-s` (300) after they were first read instead of the default hour
(WORKBENCH_JOB_RESULT_TTL_S), so that a 30-minute run's RSS growth measures what leaks rather
than the hour of results the server keeps by design (bench/server_memory.py does the same).
workbench/local_server.py starts it, the same way the end-to-end tests do.

Each user has a browser context of their own (so a cookie, and an owner id, of their own) and,
until time is up, loops through the real pages:

1. Edit & preview: clears their edit, uploads their own spec JSON (ablate_value_vectors of a
   layer and neurons no other user ablates) and imports it;
2. presses Generate: the time from the press to the first edited token on the page is measured
   in the page (a click listener and a MutationObserver), and the edited continuation the page
   shows is checked against the one this process computes for that user's spec alone, the way
   `python -m workbench apply` does (stream_pair, greedy, the page's token count). A continuation
   that is another user's is a leak; any other difference is an error (both texts printed);
3. runs a job, erase and scorecard in turn (erase: the cheapest method, 'ablate', without its
   scorecard; the user's first erase builds the 'Paris' fact set first). The queue wait is the
   time from pressing the button until the user's job panel shows the job out of 'queued'. The
   user does not wait for it to finish: the next round's job step first waits for the last job
   to show done (and its result), as a user would.

Errors: exceptions a page shows (Streamlit's stException), waits that failed (the page did not
show what the action should show in time; the user then reloads and carries on), jobs that
failed, and tracebacks with a frame of our code in the server log. The report gives page actions
completed, p50/p95 time to the first preview token, queue waits, the server's RSS over time
(/proc/<pid>/status), and the files under the cache at start and end. Its last line:

    server load: N users, M min: E errors, L leaks, p95 first token X s, RSS growth Y%

where RSS growth compares the RSS at the end with the RSS once every user's first preview ended.
The figures go to bench/results/server-load-<model>-<date>.json (`--json` for another path).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workbench.config import REPO_ROOT
from workbench.local_server import CHROMIUM_ARGS, chromium, copy_cache, prepare_cache, serve

sys.path.insert(0, str(REPO_ROOT / "tests" / "e2e"))  # the e2e tests' page waits (e2e_helpers.py)

PROMPT = "The capital of France is"  # the Edit page's default prompt
PREVIEW_TOKENS = 24  # the Edit page's default 'new tokens'
CONCEPT = "Paris"  # prepared in the cache: the erase and scorecard jobs' concept
ERASE_METHOD_LABEL = "Zero contrast-ranked value vectors"  # 'ablate': the cheapest method
ERASE_TITLE = f"Erase '{CONCEPT}' (ablate)"
SCORECARD_TITLE = f"Scorecard '{CONCEPT}'"
FACTS_TITLE = f"Fact set '{CONCEPT}'"
RESULTS = REPO_ROOT / "bench" / "results"
ARTIFACTS = REPO_ROOT / "test-artifacts"  # screenshots of failed waits
FRESH = '[data-testid="stElementContainer"]:not([data-stale="true"])'
JOB_STATE = re.compile(r"· (queued|running|done|failed|cancelled|interrupted)\b")
OUR_FRAME = re.compile(r'File ".*(/workbench/|/pages/|app\.py)')

# Installed before each Generate press: the press time (capture-phase click listener) and the
# time the edited column first shows text (MutationObserver), both on the page's own clock.
UPLOAD_RETRY_S = 60.0  # nothing shown this long after an upload (the file chip) or an Import press (the operation): done again once
PREVIEW_CAPTION = re.compile(r"Preview (\d+) · ")  # the Edit page's caption under each preview
WATCH_FIRST_TOKEN = """() => {
  window.__wbPress = null; window.__wbFirst = null; window.__wbRan = false; window.__wbLast = '';
  const fresh = (el) => el.closest('[data-stale="true"]') === null;
  const edited = () => {  // the current run's edited column (the last preview stays on the page, stale, until replaced)
    for (const col of document.querySelectorAll('[data-testid="stColumn"]')) {
      const mds = [...col.querySelectorAll('[data-testid="stMarkdown"]')].filter(fresh);
      if (mds.length > 1 && mds[0].innerText.trim().startsWith('Edited model')) return mds[1].innerText;
    }
    return '';
  };
  window.__wbEdited = edited;
  document.addEventListener('click', (e) => {
    const b = e.target.closest('button');
    if (b && b.innerText.trim() === 'Generate' && window.__wbPress === null) window.__wbPress = performance.now();
  }, {capture: true, once: true});
  const obs = new MutationObserver(() => {
    if (window.__wbPress === null) return;
    const app = document.querySelector('[data-testid="stApp"]');
    if (app && app.getAttribute('data-test-script-state') === 'running') window.__wbRan = true;
    if (!window.__wbRan) return;  // the press's run has not started: what shows is the last preview
    const text = edited();
    if (text.trim()) window.__wbLast = text;
    if (window.__wbFirst === null && text.trim()) window.__wbFirst = performance.now();
  });
  obs.observe(document.body, {childList: true, subtree: true, characterData: true, attributes: true,
                              attributeFilter: ['data-test-script-state', 'data-stale']});
}"""


# ------------------------------------------------------------------------------- the users' edits
@dataclass
class UserEdit:
    """One user's edit: the spec JSON they upload and the greedy edited continuation of PROMPT
    that spec gives alone (library, as `workbench apply`)."""

    user: int
    name: str
    spec_json: str
    expected: str


def apply_texts(bundle: Any, adapter: Any, prompt: str = PROMPT, max_new: int = PREVIEW_TOKENS) -> tuple[str, str]:
    """(base, edited) continuations of `prompt` as `python -m workbench apply` makes them:
    stream_pair, greedy, `max_new` tokens, base and edited in one batch of 2."""
    from workbench.generate import SamplingParams, stream_pair

    texts = ["", ""]
    for side, piece in stream_pair(bundle, prompt, adapter, SamplingParams(max_new_tokens=max_new)):
        texts[side] += piece
    return texts[0], texts[1]


def candidate_ops(bundle: Any) -> Any:
    """Ablations to hand out, one per user: half of one layer's neurons, the layers in turn
    (spread over the depth), then the other half."""
    import workbench as wb

    n, half = bundle.n_layers, bundle.d_mlp // 2
    step = max(1, n // 8)
    layers = [*range(0, n, step), *(i for i in range(n) if i % step)]
    for part in range(2):
        for layer in layers:
            yield wb.AblateValueVectors(layer=layer, neurons=list(range(part * half, (part + 1) * half)))


def user_edits(bundle: Any, users: int) -> tuple[str, list[UserEdit]]:
    """The base continuation and one edit per user whose edited continuation differs from the
    base's and from every other user's (else a leak could not be told from a coincidence)."""
    import workbench as wb

    base, _ = apply_texts(bundle, None)
    seen = {base}
    out: list[UserEdit] = []
    for op in candidate_ops(bundle):
        if len(out) == users:
            break
        name = f"load-user-{len(out)}"
        edit = wb.edit(bundle, [op], name=name, notes=f"bench/server_load.py: layer {op.layer}")
        _, edited = apply_texts(bundle, edit.adapter)
        if edited in seen:
            continue
        seen.add(edited)
        out.append(UserEdit(len(out), name, edit.spec.to_json(), edited))
    if len(out) < users:
        raise RuntimeError(f"only {len(out)} ablations with distinct continuations on this model; asked for {users}")
    return base, out


def normalise(text: str) -> str:
    """Page text and library text compared as the page renders them: runs of white space as one
    space (Markdown joins them), the streaming cursor dropped."""
    return " ".join(text.replace("▌", "").split())


# ------------------------------------------------------------------------------- measurements
@dataclass
class Tally:
    """What all users did, counted under one lock."""

    actions: int = 0
    previews: int = 0
    first_token_s: list[float] = field(default_factory=list)
    queue_waits: list[tuple[str, float]] = field(default_factory=list)  # (job kind, seconds)
    jobs_done: dict[str, int] = field(default_factory=dict)
    jobs_unfinished: int = 0  # still queued or running when time was up
    page_exceptions: list[str] = field(default_factory=list)
    failed_waits: list[str] = field(default_factory=list)
    failed_jobs: list[str] = field(default_factory=list)
    wrong_previews: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)  # an upload or Import that showed nothing: done again
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, what: str, value: Any = 1) -> None:
        with self.lock:
            item = getattr(self, what)
            if isinstance(item, list):
                item.append(value)
            else:
                setattr(self, what, item + value)


class Clock:
    """The measured window, shared by the users: it opens once every user has the app open (the
    first page view loads the model: setup, not load) and lasts `seconds`."""

    def __init__(self, users: int, seconds: float, wait_s: float) -> None:
        self.seconds, self.wait_s = seconds, wait_s
        self.opened_at: float | None = None
        self.barrier = threading.Barrier(users, action=self.open)

    def open(self) -> None:
        if self.opened_at is None:
            self.opened_at = time.monotonic()

    def start(self) -> None:
        """Called by each user once the app is open: waits for the others (a user that cannot
        open the app within `wait_s` does not hold the others back)."""
        try:
            self.barrier.wait(timeout=self.wait_s)
        except threading.BrokenBarrierError:
            self.open()

    def left_s(self) -> float:
        return float("inf") if self.opened_at is None else self.opened_at + self.seconds - time.monotonic()


class RssSampler(threading.Thread):
    """The server process's resident set (VmRSS of /proc/<pid>/status) every `every_s` seconds."""

    def __init__(self, pid: int, every_s: float) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid, self.every_s, self.t0 = pid, every_s, time.monotonic()
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MB)
        self.stop = threading.Event()

    def sample(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                mb = int(line.split()[1]) / 1024
                self.samples.append((time.monotonic() - self.t0, mb))
                return mb
        raise RuntimeError(f"no VmRSS for process {self.pid}")

    def run(self) -> None:
        while not self.stop.wait(self.every_s):
            try:
                self.sample()
            except (OSError, RuntimeError):
                return


def disk_usage(root: Path) -> tuple[int, float]:
    """(files, MB) under `root`, links not followed (the shared model checkpoints are a link)."""
    files, size = 0, 0
    for folder, _, names in os.walk(root):
        for name in names:
            try:
                size += (Path(folder) / name).lstat().st_size
                files += 1
            except FileNotFoundError:
                continue
    return files, size / 2**20


def our_tracebacks(log: str) -> list[str]:
    """Traceback blocks of the server log with a frame of our code (workbench/, pages/, app.py);
    Streamlit's own transport tracebacks, when a browser leaves mid-message, have none."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in log.splitlines():
        if line.startswith("Traceback (most recent call last)"):
            current = [line]
            blocks.append(current)
        elif current is not None:
            if line.startswith((" ", "\t")) or not line.strip():
                current.append(line)
            else:
                current.append(line)  # the exception line ends the block
                current = None
    return ["\n".join(b) for b in blocks if any(OUR_FRAME.search(x) for x in b)]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# ------------------------------------------------------------------------------- one user
class WaitFailed(Exception):
    """A page did not show what an action should show in time."""


class RoundFailed(Exception):
    """A step of the round failed (counted): the user reloaded the app, which starts a new
    session with an empty edit, so the round starts over."""


class User:
    """One browser user's loop through the pages (runs in a thread of its own, with its own
    Playwright and Chromium: Playwright's sync API is per thread)."""

    def __init__(self, edit: UserEdit, others: dict[int, str], base: str, url: str, tally: Tally,
                 clock: Clock, wait_s: float, first_round: Callable[[], None], log: Callable[[str], None]) -> None:
        self.edit, self.others, self.base, self.url = edit, others, base, url
        self.tally, self.clock, self.wait_ms = tally, clock, wait_s * 1000
        self.first_round, self.log = first_round, log
        self.page: Any = None
        self.owner = ""
        self.seen_exceptions: set[str] = set()
        self.facts_built = False
        self.last_job: tuple[str, str] | None = None  # (kind, title) of the job started last
        self.rounds = 0

    # ------------------------------------------------------------ plumbing
    @property
    def ui(self) -> Any:
        """The page's current elements: while a run is under way (a job that ended reruns the
        whole page at any moment) the last run's copies stay on the page, marked stale, until the
        run ends; a locator that also saw them would match twice."""
        return self.page.locator(FRESH)

    def left_s(self) -> float:
        return self.clock.left_s()

    def step(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run one page action: counted when it completes; a failed wait is an error, after which
        the user reloads the app and goes on; exceptions the page shows are errors too."""
        from playwright.sync_api import Error as PlaywrightError

        t0 = time.monotonic()
        try:
            out = fn()
        except (PlaywrightError, AssertionError, WaitFailed) as err:
            lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
            first = lines[0] if lines else type(err).__name__
            waited = next((line for line in lines if line.startswith("- waiting for")), "")
            first += f" ({waited[2:]})" if waited else ""  # which element it waited for
            self.tally.add("failed_waits", f"user {self.edit.user}: {what}: {first}")
            self.log(f"user {self.edit.user}: FAILED {what} after {time.monotonic() - t0:.1f} s: {first}")
            self.log(f"user {self.edit.user}: the page then: {self.snapshot(what)}")
            self.log(f"user {self.edit.user}: {self.page_state()}")
            self.check_exceptions()
            self.recover()
            raise RoundFailed(what) from err
        self.tally.add("actions")
        self.log(f"user {self.edit.user}: {what} ({time.monotonic() - t0:.1f} s)")
        self.check_exceptions()
        return out

    def snapshot(self, what: str) -> str:
        """A full-page screenshot under test-artifacts/ (for the person reading a failure)."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"server-load-user{self.edit.user}-{re.sub(r'[^a-z]+', '-', what)}-{int(time.time())}.png"
        try:
            self.page.screenshot(path=str(path), full_page=True)
        except Exception as err:  # noqa: BLE001 - the page may be gone
            return f"no screenshot ({err})"
        return str(path)

    def page_state(self) -> str:
        """One line on what the page was doing: the app's connection and script state, how many
        of its elements are stale (left from an earlier run), and its last lines of text."""
        try:
            state = self.page.evaluate("""() => {
              const app = document.querySelector('[data-testid="stApp"]');
              const text = (document.querySelector('[data-testid="stMain"]') || document.body).innerText;
              return [app && app.getAttribute('data-test-connection-state'),
                      app && app.getAttribute('data-test-script-state'),
                      document.querySelectorAll('[data-stale="true"]').length,
                      document.querySelectorAll('[data-testid="stElementContainer"]').length,
                      text.trim().split('\\n').filter(l => l.trim()).slice(-6).join(' | ')];
            }""")
        except Exception as err:  # noqa: BLE001 - the page may be gone
            return f"page state unknown ({err})"
        connection, script, stale, elements, tail = state
        return (f"page state: connection {connection}, script {script}, {stale} of {elements} elements stale; "
                f"last lines: {tail[-600:]}")

    def check_exceptions(self) -> None:
        try:
            texts = self.page.get_by_test_id("stException").all_inner_texts()
        except Exception:  # noqa: BLE001 - a closed page shows none
            return
        for text in texts:
            if text not in self.seen_exceptions:
                self.seen_exceptions.add(text)
                self.tally.add("page_exceptions", f"user {self.edit.user}: {text.strip()[:2000]}")
                self.log(f"user {self.edit.user}: PAGE EXCEPTION {text.strip()[:300]}")

    def recover(self) -> None:
        from e2e_helpers import settled

        try:
            self.page.goto(self.url)
            self.page.get_by_text("Cache and store").wait_for(timeout=self.wait_ms)
            settled(self.page, self.wait_ms)
        except Exception as err:  # noqa: BLE001 - the next action's wait will say what is wrong
            self.log(f"user {self.edit.user}: reload failed: {err}")

    # ------------------------------------------------------------ the pages
    def open_app(self) -> None:
        from e2e_helpers import settled

        self.page.goto(self.url)
        self.page.get_by_text("Cache and store").wait_for(timeout=self.wait_ms)
        settled(self.page, self.wait_ms)
        # the page writes the owner cookie with a script of its own, once it has rendered
        self.page.wait_for_function("() => document.cookie.includes('workbench_owner=')", timeout=self.wait_ms)

    def on_page(self, label: str, heading: str) -> None:
        from e2e_helpers import navigate

        navigate(self.page, label, heading, self.wait_ms)

    def retrying(self, missing: str, since: str, doing: str) -> None:
        """Count and log an idempotent step done again because nothing showed (`retried`)."""
        detail = f"user {self.edit.user}: {missing} {UPLOAD_RETRY_S:.0f} s {since}; {self.page_state()}"
        self.tally.add("retried", detail)
        self.log(f"{detail}; {doing}")

    def import_edit(self) -> None:
        """Edit & preview: clear the edit, upload this user's spec and import it. An upload whose
        file never shows is set again once, and an Import press that imports nothing is pressed again
        once, each counted (`retried`), not failed: on a loaded server Streamlit has dropped an upload
        in flight (no file and no error on the page), and has missed an upload's own run (the file
        shown, the server without it; the press carries it)."""
        from e2e_helpers import settled, until_shown

        p, ui = self.page, self.ui
        self.on_page("Edit and preview", "Edit & preview")
        if ui.get_by_role("button", name="Clear all").count():
            ui.get_by_role("button", name="Clear all").click()
            ui.get_by_role("heading", name="Operations (0)").wait_for(timeout=self.wait_ms)
            settled(p, self.wait_ms)
        while ui.get_by_test_id("stFileChipDeleteBtn").count():  # last round's upload
            before = ui.get_by_test_id("stFileChipDeleteBtn").count()
            ui.get_by_test_id("stFileChipDeleteBtn").first.click()
            from playwright.sync_api import expect

            expect(ui.get_by_test_id("stFileChipDeleteBtn")).to_have_count(before - 1, timeout=self.wait_ms)
            settled(p, self.wait_ms)
        file_name = f"{self.edit.name}.json"
        chips = ui.get_by_test_id("stFileChipName").filter(has_text=file_name)

        def upload() -> None:
            ui.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(
                files=[{"name": file_name, "mimeType": "application/json", "buffer": self.edit.spec_json.encode()}])

        until_shown(p, upload, chips, self.wait_ms, retry_after_ms=UPLOAD_RETRY_S * 1000,
                    on_retry=lambda: self.retrying("no file chip", "after the upload", "setting the file again"))
        settled(p, self.wait_ms)
        while chips.count() > 1:  # the first upload landed after all: one spec file only
            ui.get_by_test_id("stFileChipDeleteBtn").first.click()
            settled(p, self.wait_ms)
        until_shown(p, ui.get_by_role("button", name="Import", exact=True).click,
                    ui.get_by_role("heading", name="Operations (1)"), self.wait_ms,
                    retry_after_ms=UPLOAD_RETRY_S * 1000,
                    on_retry=lambda: self.retrying("no operation", "after the Import press", "pressing it again"))
        settled(p, self.wait_ms)
        ui.get_by_text("Compiled adapter:").wait_for(timeout=self.wait_ms)

    def preview(self) -> None:
        """Generate; the time to the first edited token; the edited text against this user's own."""
        from e2e_helpers import settled

        p, ui = self.page, self.ui
        # the last run has ended before the caption is read: read while a run still draws, the last
        # preview's caption can be missing, and the wait below would be for "Preview 1" forever
        settled(p, self.wait_ms)
        prompt = ui.get_by_label("Prompt").input_value()
        tokens = ui.get_by_test_id("stSlider").filter(has_text="new tokens").locator('input[type="range"]').input_value()
        if prompt != PROMPT or str(tokens) != str(PREVIEW_TOKENS):
            raise WaitFailed(f"the Edit page's defaults changed: prompt {prompt!r}, new tokens {tokens!r} "
                             f"(the bench expects {PROMPT!r}, {PREVIEW_TOKENS})")
        before = ui.get_by_text(PREVIEW_CAPTION)
        seen = PREVIEW_CAPTION.search(before.first.inner_text()) if before.count() else None
        number = int(seen.group(1)) if seen else 0
        p.evaluate(WATCH_FIRST_TOKEN)
        ui.get_by_role("button", name="Generate").click()
        ui.get_by_text(f"Preview {number + 1} · ").wait_for(timeout=self.wait_ms)  # numbered: the last one stays
        settled(p, self.wait_ms)
        pressed, first, shown = p.evaluate("() => [window.__wbPress, window.__wbFirst, window.__wbEdited() || window.__wbLast]")
        self.tally.add("previews")
        if pressed is None or first is None:
            raise WaitFailed("the page never showed an edited token")
        self.tally.add("first_token_s", (first - pressed) / 1000)
        self.check_text(shown)

    def check_text(self, shown: str) -> None:
        got, want = normalise(shown), normalise(PROMPT + self.edit.expected)
        if got == want:
            return
        owners = [u for u, text in self.others.items() if normalise(PROMPT + text) == got]
        what = (f"user {self.edit.user} saw user {owners[0]}'s edited text" if owners else
                f"user {self.edit.user} saw the base model's text" if got == normalise(PROMPT + self.base) else
                f"user {self.edit.user} saw a text that is nobody's")
        detail = f"{what}\n    page:     {got!r}\n    expected: {want!r}"
        self.log("LEAK: " + detail if owners else "WRONG PREVIEW: " + detail)
        self.tally.add("leaks" if owners else "wrong_previews", detail)

    def job_line(self, title: str) -> Any:
        return self.ui.locator('[data-testid="stMarkdown"]').filter(has_text=title).first

    def wait_state(self, title: str, states: str, limit_s: float) -> str | None:
        """Wait until the job line of `title` shows one of `states` ('done|failed'); None when
        `limit_s` passed first (time is up: not an error)."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout
        from playwright.sync_api import expect

        try:
            expect(self.job_line(title)).to_contain_text(re.compile(rf"· ({states})\b"),
                                                         timeout=max(1.0, limit_s) * 1000)
        except (AssertionError, PlaywrightTimeout):
            if self.left_s() <= 0:
                return None
            raise
        m = JOB_STATE.search(self.job_line(title).inner_text())
        return m.group(1) if m else None

    def start_job(self, kind: str, button: str, title: str) -> None:
        """Press the job's button; the queue wait is until the page shows the job out of 'queued'."""
        from e2e_helpers import settled
        from playwright.sync_api import expect

        p, ui = self.page, self.ui
        toast = p.get_by_test_id("stToast").filter(has_text=title)
        expect(toast).to_have_count(0, timeout=self.wait_ms)  # the toast of this user's last start has gone
        t0 = time.monotonic()
        ui.get_by_role("button", name=button, exact=True).click()
        toast.first.wait_for(timeout=self.wait_ms)  # "Started: <title>" or "Queued: <title>": the press's run
        settled(p, self.wait_ms)
        state = self.wait_state(title, "running|done|failed|cancelled|interrupted", self.left_s())
        if state is None:
            self.tally.add("jobs_unfinished")
            self.last_job = None
            return
        self.tally.add("queue_waits", (kind, time.monotonic() - t0))
        self.log(f"user {self.edit.user}: {title} left the queue after {time.monotonic() - t0:.1f} s ({state})")
        self.last_job = (kind, title)
        if state == "failed":
            self.job_failed(title)

    def job_failed(self, title: str) -> None:
        text = " ".join(self.page.get_by_test_id("stAlert").all_inner_texts())
        self.tally.add("failed_jobs", f"user {self.edit.user}: {title}: {text[:500]}")
        self.log(f"user {self.edit.user}: JOB FAILED {title}: {text[:300]}")
        self.last_job = None

    def finish_last_job(self) -> bool:
        """Wait on its page for the last job to show done and its result; False when time ran out."""
        if self.last_job is None:
            return True
        (kind, title), self.last_job = self.last_job, None  # a failed wait does not hold up the next job
        if kind == "erase":
            self.on_page("Erase a concept", "Erase a concept")
        else:
            self.on_page("Edit and preview", "Edit & preview")
        state = self.wait_state(title, "done|failed|cancelled|interrupted", self.left_s())
        if state is None:
            self.tally.add("jobs_unfinished")
            return False
        if state != "done":
            self.job_failed(title)
            return True
        result = "4 · Result" if kind == "erase" else "score (harmonic mean"
        self.ui.get_by_text(result).first.wait_for(timeout=self.wait_ms)
        with self.tally.lock:
            self.tally.jobs_done[kind] = self.tally.jobs_done.get(kind, 0) + 1
        return True

    def choose_concept(self) -> None:
        from e2e_helpers import settled
        from playwright.sync_api import expect

        p, ui = self.page, self.ui
        box = ui.get_by_label("Search corpus titles")
        box.fill(CONCEPT)
        box.press("Enter")
        expect(ui.get_by_role("combobox", name=re.compile("^Corpus article"))).to_have_value(
            re.compile(CONCEPT), timeout=self.wait_ms)
        settled(p, self.wait_ms)

    def build_facts(self) -> None:
        self.start_job("facts", "Build fact set", FACTS_TITLE)
        if self.last_job is None:
            return
        state = self.wait_state(FACTS_TITLE, "done|failed|cancelled|interrupted", self.left_s())
        if state == "done":
            self.ui.get_by_text("facts kept").wait_for(timeout=self.wait_ms)
            self.facts_built = True
            with self.tally.lock:
                self.tally.jobs_done["facts"] = self.tally.jobs_done.get("facts", 0) + 1
        elif state is None:
            self.tally.add("jobs_unfinished")
        else:
            self.job_failed(FACTS_TITLE)
        self.last_job = None

    def erase(self) -> None:
        """Erase page: the concept, its fact set (first time), 'ablate' without the scorecard, Erase."""
        from e2e_helpers import settled
        from playwright.sync_api import expect

        p, ui = self.page, self.ui
        self.on_page("Erase a concept", "Erase a concept")
        self.choose_concept()
        if not self.facts_built:
            self.build_facts()
            if not self.facts_built:
                return
        ui.get_by_text("facts kept").wait_for(timeout=self.wait_ms)
        ui.locator('[data-testid="stSelectbox"]').filter(has_text="Method").click()
        p.get_by_role("option", name=ERASE_METHOD_LABEL).click()
        expect(ui.get_by_role("combobox", name="Method", exact=True)).to_have_value(ERASE_METHOD_LABEL, timeout=self.wait_ms)
        settled(p, self.wait_ms)
        score = ui.get_by_role("checkbox", name="Run the scorecard afterwards")
        if score.is_checked():
            ui.get_by_text("Run the scorecard afterwards").click()
            expect(score).not_to_be_checked(timeout=self.wait_ms)
            settled(p, self.wait_ms)
        self.start_job("erase", "Erase", ERASE_TITLE)

    def scorecard(self) -> None:
        """Edit page: score this user's edit on the concept."""
        from e2e_helpers import settled
        from playwright.sync_api import expect

        p, ui = self.page, self.ui
        self.on_page("Edit and preview", "Edit & preview")
        box = ui.get_by_label("Concept to score (a corpus title)")
        if box.input_value() != CONCEPT:
            box.fill(CONCEPT)
            box.press("Enter")
            expect(ui.get_by_role("button", name="Run scorecard")).to_be_enabled(timeout=self.wait_ms)
            settled(p, self.wait_ms)
        self.start_job("scorecard", "Run scorecard", SCORECARD_TITLE)

    # ------------------------------------------------------------ the loop
    def round(self) -> None:
        """Import the edit, preview it, then (the last job done) start the next job."""
        try:
            self.step("import the edit", self.import_edit)
            self.step("preview", self.preview)
        finally:
            if self.rounds == 0:
                self.first_round()
            self.rounds += 1
        if self.left_s() <= 0 or not self.step("wait for the last job", self.finish_last_job):
            return
        if self.left_s() > 0:
            kind = ("erase", "scorecard")[(self.edit.user + self.rounds) % 2]
            self.step(f"start a {kind} job", self.erase if kind == "erase" else self.scorecard)

    def run(self, browser: Any) -> None:
        context = browser.new_context(viewport={"width": 1400, "height": 2400})
        self.page = context.new_page()
        self.page.set_default_timeout(self.wait_ms)
        try:
            try:
                self.step("open the app", self.open_app)
            except RoundFailed:
                pass  # reloaded: the rounds go on
            self.clock.start()
            self.owner = next((c["value"] for c in context.cookies() if c["name"] == "workbench_owner"), "")
            while self.left_s() > 0:
                try:
                    self.round()
                except RoundFailed:
                    continue
        finally:
            if self.rounds == 0:  # never got to a preview: the others do not wait for it
                self.first_round()
                self.rounds = 1
            context.close()


def drive_user(user: User) -> None:
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            try:
                user.run(browser)
            finally:
                browser.close()
    except Exception:  # noqa: BLE001 - a broken user is an error of the run, not a crash of the bench
        user.tally.add("failed_waits", f"user {user.edit.user}: {traceback.format_exc(limit=3)}")
        user.log(f"user {user.edit.user}: CRASHED\n{traceback.format_exc()}")


# ------------------------------------------------------------------------------- the run
@dataclass
class LoadReport:
    users: int
    minutes: float
    model: str
    actions: int
    previews: int
    first_token_p50_s: float | None
    first_token_p95_s: float | None
    queue_wait_p50_s: float | None
    queue_wait_max_s: float | None
    queue_waits: list[tuple[str, float]]
    jobs_done: dict[str, int]
    jobs_unfinished: int
    errors: int
    error_kinds: dict[str, int]
    error_details: list[str]
    leaks: int
    leak_details: list[str]
    retried: list[str]
    owners: list[str]
    rss_mb: list[tuple[float, float]]
    rss_after_first_previews_mb: float | None
    rss_end_mb: float | None
    rss_growth_pct: float | None
    disk_start: tuple[int, float]
    disk_end: tuple[int, float]
    setup_s: float
    measured_s: float
    result_ttl_s: float

    def last_line(self) -> str:
        p95 = "n/a" if self.first_token_p95_s is None else f"{self.first_token_p95_s:.2f}"
        growth = "n/a" if self.rss_growth_pct is None else f"{self.rss_growth_pct:.1f}"
        return (f"server load: {self.users} users, {self.minutes:g} min: {self.errors} errors, {self.leaks} leaks, "
                f"p95 first token {p95} s, RSS growth {growth}%")


def working_cache(model: str, template: Path | None, into: Path) -> Path:
    """A fresh copy of a prepared cache for this run (prepared first when the template is empty)."""
    template = template or REPO_ROOT / "cache" / f"load-{model}"
    if not (template / "workbench.duckdb").exists():
        print(f"preparing {template} for {model} (once; vocab, statistics, '{CONCEPT}') ...", flush=True)
        prepare_cache(template, model, concepts=(CONCEPT,), timeout_s=4 * 3600)
    cache = into / "cache"
    copy_cache(template, cache)
    return cache


def run_load(users: int = 2, minutes: float = 2.0, model: str = "tiny", *, cache: Path | None = None,
             wait_s: float = 300.0, rss_every_s: float = 5.0, result_ttl_s: float = 300.0,
             quiet: bool = False) -> LoadReport:
    """Serve `model` on a copy of the prepared cache `cache`, drive `users` browser users through
    the pages for `minutes`, and measure (see the module docstring)."""
    import workbench as wb

    def log(text: str) -> None:
        if not quiet:
            print(f"[{time.monotonic() - t_start:7.1f} s] {text}", flush=True)

    if chromium() is None:
        raise RuntimeError("chromium is not installed (apt-get install -y chromium)")
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="server-load-") as tmp:
        work = working_cache(model, cache, Path(tmp))
        bundle = wb.load(model, cache_dir=work, tune_process=True)  # the CLI's load (workbench apply)
        base, edits = user_edits(bundle, users)
        del bundle
        log(f"{users} users' edits: " + "; ".join(f"user {e.user}: {e.expected!r}" for e in edits))
        disk_start = disk_usage(work)
        env = {"WORKBENCH_AUTOPREPARE": "0", "WORKBENCH_JOB_RESULT_TTL_S": f"{result_ttl_s:g}"}
        with serve(work, model, env=env, log_path=Path(tmp) / "server.log",
                   start_timeout_s=180) as server:
            log(f"server {server.url}, pid {server.pid}, cache {work}")
            sampler = RssSampler(server.pid, rss_every_s)
            sampler.sample()
            sampler.start()
            tally = Tally()
            firsts: list[float] = []

            def first_round() -> None:
                with tally.lock:
                    firsts.append(0.0)
                    last = len(firsts) == users
                if last:
                    firsts[-1] = sampler.sample()
                    log(f"every user's first preview ended: server RSS {firsts[-1]:.0f} MB")

            clock = Clock(users, minutes * 60, wait_s)
            crowd = [User(e, {o.user: o.expected for o in edits if o.user != e.user}, base, server.url, tally,
                          clock, wait_s, first_round, log) for e in edits]
            threads = [threading.Thread(target=drive_user, args=(u,), name=f"user-{u.edit.user}") for u in crowd]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            opened = clock.opened_at or time.monotonic()
            setup_s, measured_s = opened - t_start, time.monotonic() - opened
            sampler.stop.set()
            sampler.join()
            rss_end = sampler.sample()
            disk_end = disk_usage(work)
        tracebacks = our_tracebacks(server.log())
    waits = [s for _, s in tally.queue_waits]
    kinds = {"page exceptions": tally.page_exceptions, "failed waits": tally.failed_waits,
             "failed jobs": tally.failed_jobs, "wrong previews": tally.wrong_previews,
             "server tracebacks": tracebacks}
    baseline = firsts[-1] if len(firsts) == users and firsts[-1] else None
    return LoadReport(
        users=users, minutes=minutes, model=model, actions=tally.actions, previews=tally.previews,
        first_token_p50_s=percentile(tally.first_token_s, 50), first_token_p95_s=percentile(tally.first_token_s, 95),
        queue_wait_p50_s=percentile(waits, 50), queue_wait_max_s=max(waits) if waits else None,
        queue_waits=tally.queue_waits, jobs_done=dict(tally.jobs_done), jobs_unfinished=tally.jobs_unfinished,
        errors=sum(len(v) for v in kinds.values()), error_kinds={k: len(v) for k, v in kinds.items()},
        error_details=[d for v in kinds.values() for d in v], leaks=len(tally.leaks), leak_details=tally.leaks,
        retried=tally.retried,
        owners=[u.owner for u in crowd], rss_mb=sampler.samples, rss_after_first_previews_mb=baseline,
        rss_end_mb=rss_end, rss_growth_pct=None if baseline is None else (rss_end - baseline) / baseline * 100,
        disk_start=disk_start, disk_end=disk_end, setup_s=setup_s, measured_s=measured_s, result_ttl_s=result_ttl_s,
    )


def print_report(r: LoadReport) -> None:
    def s(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f} s"

    print(f"\n{r.users} users for {r.minutes:g} min on the {r.model} model "
          f"(owners {', '.join(o or '?' for o in r.owners)}; setup {r.setup_s:.0f} s, measured {r.measured_s:.0f} s)")
    print(f"page actions completed: {r.actions}")
    print(f"previews: {r.previews}; time to the first edited token p50 {s(r.first_token_p50_s)}, "
          f"p95 {s(r.first_token_p95_s)}")
    by_kind = ", ".join(f"{k} {n}" for k, n in sorted(r.jobs_done.items())) or "none"
    print(f"jobs done: {by_kind}; still queued or running at the end: {r.jobs_unfinished}")
    print(f"queue waits ({len(r.queue_waits)} jobs): p50 {s(r.queue_wait_p50_s)}, max {s(r.queue_wait_max_s)}")
    print(f"errors: {r.errors} (" + ", ".join(f"{k} {n}" for k, n in r.error_kinds.items()) + ")")
    for detail in r.error_details:
        print("  " + detail.replace("\n", "\n  "))
    print(f"leaks: {r.leaks}")
    print(f"uploads set again or Import pressed again (nothing showed in {UPLOAD_RETRY_S:.0f} s): {len(r.retried)}")
    for detail in r.retried:
        print(f"  {detail}")
    for detail in r.leak_details:
        print("  " + detail.replace("\n", "\n  "))
    print("server RSS over time:")
    print(f"  {'t (s)':>7} {'RSS MB':>8}")
    rows = r.rss_mb
    stride = max(1, len(rows) // 12)
    for t, mb in [*rows[::stride], *([rows[-1]] if rows and (len(rows) - 1) % stride else [])]:
        print(f"  {t:7.0f} {mb:8.0f}")
    base = "n/a" if r.rss_after_first_previews_mb is None else f"{r.rss_after_first_previews_mb:.0f} MB"
    print(f"  after every user's first preview {base}, at the end {r.rss_end_mb:.0f} MB")
    print(f"cache: {r.disk_start[0]} files, {r.disk_start[1]:.1f} MB at start; "
          f"{r.disk_end[0]} files, {r.disk_end[1]:.1f} MB at the end")
    print(r.last_line())


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--model", default="tiny", help="'tiny' (quick) or 'embedded' (Gemma 3 270M)")
    ap.add_argument("--cache", type=Path, help="a prepared cache to copy (default: cache/load-<model>, prepared once)")
    ap.add_argument("--wait-s", type=float, default=300.0, help="how long a page action may take before it failed")
    ap.add_argument("--rss-every-s", type=float, default=5.0)
    ap.add_argument("--result-ttl-s", type=float, default=300.0,
                    help="how long the server keeps a finished job's result after its first read (its default: 3600)")
    ap.add_argument("--json", type=Path, help="where to write the figures (default: bench/results/)")
    args = ap.parse_args(argv)
    report = run_load(args.users, args.minutes, args.model, cache=args.cache, wait_s=args.wait_s,
                      rss_every_s=args.rss_every_s, result_ttl_s=args.result_ttl_s)
    out = args.json or RESULTS / f"server-load-{args.model}-{args.users}u-{args.minutes:g}min-{time.strftime('%Y-%m-%d')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**asdict(report), "last_line": report.last_line(), "date": time.strftime("%Y-%m-%d %H:%M"),
                               "cpus": os.cpu_count(), "load_average": os.getloadavg()}, indent=1) + "\n")
    print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
