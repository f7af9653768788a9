"""Background jobs of the app: long builds run in threads of the server process, outside the
request path, and report through FileProgress JSON files under `Settings.jobs_dir`.

A page starts a job and returns at once; any page (or a reloaded page) lists the jobs by
reading those files, so progress survives a reload. One job per `kind` runs at a time. Jobs
need no model lock: the base weights are never written (edits are adapters routed per batch
row), so builds and previews run side by side.

    manager = JobManager(settings.jobs_dir)
    job_id = manager.start("prepare", "Prepare vocab + stats", lambda progress: ...)
    manager.jobs()   # [JobStatus, ...] newest first
"""

from __future__ import annotations

import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from workbench.progress import FileProgress, read_progress

JobState = Literal["running", "done", "failed", "interrupted"]
OTHER_PROCESS_FRESH_S = 120.0  # a progress file written this recently belongs to a live job
# A job returns a one-line summary, or (summary, result) to keep a Python object for the page
# that started it (JobManager.result); results live in memory only.
JobFn = Callable[[FileProgress], "str | None | tuple[str, Any]"]


class JobBusyError(RuntimeError):
    """A job of the same kind is already running."""


@dataclass(frozen=True)
class JobStatus:
    """What a page shows for one job (read back from its progress file)."""

    job_id: str
    kind: str
    title: str
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

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return max(0.0, min(1.0, self.done / self.total))

    @property
    def elapsed_s(self) -> float:
        end = self.updated if self.state != "running" else time.time()
        return max(0.0, end - self.started)


class JobManager:
    """Starts job threads and reads job files. One per server process (st.cache_resource)."""

    def __init__(self, jobs_dir: Path) -> None:
        self.jobs_dir = Path(jobs_dir)
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._kinds: dict[str, str] = {}  # kind -> running job id
        self._results: dict[str, Any] = {}

    def running(self, kind: str) -> str | None:
        with self._lock:
            job_id = self._kinds.get(kind)
            if job_id and self._threads[job_id].is_alive():
                return job_id
            return None

    def start(self, kind: str, title: str, fn: JobFn) -> str:
        """Run `fn(progress)` in a daemon thread; returns the job id at once."""
        with self._lock:
            busy = self._kinds.get(kind)
            if busy and self._threads[busy].is_alive():
                raise JobBusyError(f"A {kind} job is already running ({busy}); wait for it to finish.")
            job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{uuid.uuid4().hex[:6]}"
            progress = FileProgress(self.jobs_dir / f"{job_id}.json")
            progress.state.update(job_id=job_id, kind=kind, title=title, state="running", summary="", error="")
            progress.close()
            thread = threading.Thread(target=self._run, args=(job_id, fn, progress), name=f"job-{job_id}",
                                      daemon=True)
            self._threads[job_id] = thread
            self._kinds[kind] = job_id
            thread.start()
        return job_id

    def _run(self, job_id: str, fn: JobFn, progress: FileProgress) -> None:
        try:
            out = fn(progress)
            summary = out
            if isinstance(out, tuple):
                summary, result = out
                with self._lock:
                    self._results[job_id] = result
            progress.state.update(state="done", summary=summary or "finished")
        except BaseException as err:  # noqa: BLE001 - a job failure is reported, never raised into the server
            progress.state.update(state="failed", error=f"{type(err).__name__}: {err}")
            progress.message(traceback.format_exc(limit=4))
        finally:
            progress.close()

    def jobs(self, limit: int = 20) -> list[JobStatus]:
        """Jobs newest first. A 'running' job whose thread is gone (server restarted) is shown
        as interrupted: its finished slices are in the store and a rerun resumes."""
        files = sorted(self.jobs_dir.glob("*.json"), reverse=True)[:limit]
        out = []
        for path in files:
            raw = read_progress(path)
            if raw is None or "job_id" not in raw:
                continue
            out.append(self._status(raw))
        return out

    def result(self, job_id: str) -> Any:
        """The object a finished job returned with its summary (None if none or not finished)."""
        with self._lock:
            return self._results.get(job_id)

    def status(self, job_id: str) -> JobStatus | None:
        raw = read_progress(self.jobs_dir / f"{job_id}.json")
        return None if raw is None else self._status(raw)

    def _status(self, raw: dict[str, Any]) -> JobStatus:
        state: JobState = raw.get("state", "running")
        with self._lock:
            thread = self._threads.get(raw["job_id"])
        if state == "running" and (thread is None or not thread.is_alive()):
            # Not a thread of this process: another server on this cache runs it while it keeps
            # writing its progress file; otherwise the server that ran it stopped.
            fresh = thread is None and time.time() - float(raw.get("updated", 0.0)) < OTHER_PROCESS_FRESH_S
            state = "running" if fresh else "interrupted"
        return JobStatus(
            job_id=raw["job_id"], kind=raw.get("kind", "?"), title=raw.get("title", ""), state=state,
            stage=raw.get("stage", ""), done=float(raw.get("done", 0)), total=raw.get("total"),
            unit=raw.get("unit", "it"), started=float(raw.get("started", 0.0)),
            updated=float(raw.get("updated", 0.0)), summary=raw.get("summary", ""),
            error=raw.get("error", ""), messages=list(raw.get("messages", [])),
        )

    def wait(self, job_id: str, timeout_s: float = 600.0) -> JobStatus | None:
        """Block until a job ends (tests and benchmarks; pages never wait)."""
        with self._lock:
            thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout_s)
        return self.status(job_id)

    def clear_finished(self) -> int:
        """Delete the files of finished jobs; returns how many."""
        n = 0
        for status in self.jobs(limit=10_000):
            if status.state != "running":
                (self.jobs_dir / f"{status.job_id}.json").unlink(missing_ok=True)
                n += 1
        return n


# ---------------------------------------------------------------------- job bodies
def prepare_job(
    store: Any, bundle: Any, *, stats_tokens: int = 20_000, layers: list[int] | None = None,
    vocab: bool = True, stats: bool = True,
) -> JobFn:
    """Vocab projections and neuron statistics on the embedded corpus."""

    def run(progress: FileProgress) -> str:
        from workbench.corpus import load_wiki
        from workbench.prepare import (
            PrepareConfig,
            build_neuron_stats,
            build_vocab_projections,
            register_model,
        )

        cfg = PrepareConfig(layers=layers, stat_tokens=stats_tokens)
        reports = []
        register_model(store, bundle)
        if vocab:
            reports += build_vocab_projections(store, bundle, cfg, progress)
        if stats:
            reports += build_neuron_stats(store, bundle, load_wiki("en"), cfg, progress)
        built = [r for r in reports if not r.skipped]
        return f"built {len(built)} slice(s), {len(reports) - len(built)} already up to date"

    return run


def concept_job(
    store: Any, bundle: Any, name: str, *, titles: list[str] | None = None, terms: list[str] | None = None,
    n_docs: int = 48, neutral_corpus_id: str | None = None, force: bool = False, texts: list[str] | None = None,
) -> JobFn:
    """Build one concept set (corpus titles, terms and/or pasted texts) and its analyses into the store."""

    def run(progress: FileProgress) -> str:
        from workbench.corpus import build_concept_set, load_wiki
        from workbench.prepare import PrepareConfig, build_concept, register_model

        wiki = load_wiki("en")
        concept = build_concept_set(wiki, name, titles=titles or (), terms=terms or (),
                                    n_positive=n_docs, n_negative=2 * n_docs, texts=texts or ())
        progress.message(f"{len(concept.positive)} concept docs, {len(concept.negative)} neutral docs")
        register_model(store, bundle)
        report = build_concept(store, bundle, concept, PrepareConfig(force=force), progress,
                               neutral_corpus_id=neutral_corpus_id)
        if report.skipped:
            return f"concept {concept.concept_id} already built (tick 'rebuild' to redo it)"
        return f"concept {concept.concept_id}: {report.rows} contrast rows in {report.seconds:.1f} s"

    return run



def scorecard_job(bundle: Any, concept: str, adapter: Any, options: Any | None = None) -> JobFn:
    """Scorecard of an edit (workbench.benchmark.scorecard) for one concept; the result is the Scorecard.
    `options` are EvalOptions (None: the defaults)."""

    def run(progress: FileProgress) -> tuple[str, Any]:
        from workbench.benchmark.scorecard import EvalOptions, evaluate

        card = evaluate(bundle, concept, adapter, options=options or EvalOptions(), progress=progress)
        return f"score {card.score:.3f}", card

    return run


def export_job(bundle: Any, adapter: Any, spec: Any, out_dir: Path, store: Any | None = None) -> JobFn:
    """Write the edited checkpoint folder (safetensors) and record the spec in the store."""

    def run(progress: FileProgress) -> str:
        from workbench.exports import export_checkpoint

        progress.stage(f"exporting edited checkpoint to {out_dir}")
        path = export_checkpoint(bundle, adapter, spec, out_dir, overwrite=True)
        if store is not None:
            store.save_edit(spec.sha256()[:16], bundle.model_id, spec.name, spec.to_json(),
                            {"exported_to": str(path)})
        return f"exported to {path}"

    return run


def fact_set_job(bundle: Any, corpus: Any, concept: str, about: str = "", chat_template: bool = False) -> JobFn:
    """Build a concept's fact set (methods.facts.build_fact_set); the result is the FactSet, which the
    page shows for editing before the erasure runs. `chat_template`: sample the model through its
    tokenizer's chat template."""

    def run(progress: FileProgress) -> tuple[str, Any]:
        from workbench.methods.facts import build_fact_set

        facts = build_fact_set(bundle, corpus, concept, progress=progress, about=about, chat_template=chat_template)
        return f"{len(facts.facts)} facts about '{facts.concept}'", facts

    return run


def erase_job(bundle: Any, corpus: Any, concept: str, method: str, fact_set: Any | None, options: Any) -> JobFn:
    """Run the erase pipeline (methods.erase.erase); the result is the EraseResult (spec, payload,
    candidates, scorecard)."""

    def run(progress: FileProgress) -> tuple[str, Any]:
        from workbench.methods.erase import erase

        result = erase(bundle, corpus, concept, method, progress, fact_set=fact_set, options=options)
        score = f", score {result.scorecard.score:.3f}" if result.scorecard is not None else ""
        return f"erased '{concept}' with {method} in {result.seconds:.0f} s{score}", result

    return run


def sae_job(store: Any, bundle: Any, settings: Any, cfg: Any, catalogue_tokens: int = 50_000) -> JobFn:
    """Train an SAE (cached per config: a finished config is not retrained) and catalogue it
    into the store, so the Feature browser can show it."""

    def run(progress: FileProgress) -> str:
        from workbench.sae.index import catalogue_into_store
        from workbench.sae.train import train_sae

        result = train_sae(bundle, cfg, settings, progress=progress)
        m = result.metrics
        quality = f"{result.sae_id}: EV {m.explained_variance:.3f}, L0 {m.l0:.1f}, dead {m.dead_fraction:.0%}"
        progress.message(quality)
        cat = catalogue_into_store(store, bundle, result.sae, result.sae_id, result.sha256, result.path,
                                   m.to_dict(), max_tokens=catalogue_tokens, progress=progress)
        return f"{quality}; {cat.d_sae} features catalogued"

    return run


def sae_catalogue_job(store: Any, bundle: Any, path: Path, catalogue_tokens: int = 50_000) -> JobFn:
    """Catalogue a local SAE folder into the store."""

    def run(progress: FileProgress) -> str:
        from workbench.sae.index import catalogue_folder

        cat = catalogue_folder(store, bundle, path, max_tokens=catalogue_tokens, progress=progress)
        return f"{cat.sae_id}: {cat.d_sae} features catalogued over {cat.n_tokens:,} tokens"

    return run


def sae_contrast_job(store: Any, bundle: Any, sae: Any, sae_id: str, concept_id: str, max_tokens: int = 20_000) -> JobFn:
    """Mean activation of every SAE feature on a stored concept set's documents vs neutral ones,
    saved so the Feature browser can rank features by concept."""

    def run(progress: FileProgress) -> str:
        import json

        from workbench.corpus import build_concept_set, load_wiki
        from workbench.sae.catalogue import feature_contrast

        row = store.concept_sets().set_index("concept_id").loc[concept_id]
        wiki = load_wiki("en")
        titles = [t for t in json.loads(row["positive_titles_json"]) if wiki.has(t)]  # pasted texts are not stored
        if not titles:
            raise ValueError(f"Concept set '{row['name']}' was built from pasted text only, which the store does "
                             "not keep; rebuild it with corpus titles or terms to rank SAE features by it.")
        concept = build_concept_set(wiki, str(row["name"]), titles=titles,
                                    terms=json.loads(row["terms_json"]), n_negative=int(row["n_negative"]))
        progress.stage(f"SAE feature activations on '{row['name']}' vs neutral documents")
        contrast = feature_contrast(bundle, sae, concept, max_tokens=max_tokens)
        store.save_feature_contrast(sae_id, concept_id, contrast)
        top = contrast.head(3)["feature"].tolist()
        return f"contrast of {len(contrast):,} features on '{row['name']}'; strongest: {top}"

    return run


def pretrained_sae_job(store: Any, bundle: Any, release: str, sae_id: str, catalogue_tokens: int = 50_000) -> JobFn:
    """Load an SAE from SAELens's registry (hub or local HF cache; a clear error offline) and
    catalogue it into the store."""

    def run(progress: FileProgress) -> str:
        from workbench.sae.index import catalogue_pretrained

        progress.stage(f"loading {release}/{sae_id}")
        cat = catalogue_pretrained(store, bundle, release, sae_id, max_tokens=catalogue_tokens, progress=progress)
        return f"{cat.sae_id}: {cat.d_sae} features catalogued over {cat.n_tokens:,} tokens"

    return run
