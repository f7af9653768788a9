"""The first start: build everything the pages show, by itself, in order of value.

A newcomer who opens the app should see features, value vectors and histograms without
finding and starting five builds by hand. `run_first_start` builds, in this order:

1. vocab projections of the most-used layers (the default SAE layer first, then the layers
   the default erase method edits): the value-vector browser works after the first slice;
2. neuron statistics on the embedded corpus (the Neurons page's histograms);
3. the default concept sets (concept vectors, neuron contrast);
4. a quick SAE (width 1024, 80k tokens: a few minutes) and its feature catalogue;
5. vocab projections of the remaining layers (every page already shows real content);
6. the full SAE (the default `SAETrainConfig`, ~15 min) and its catalogue.

Every step is resumable: finished slices, trained SAEs and catalogues are kept, so an
interrupted first start continues where it stopped. The app starts it in a background job
(`maybe_start`); `python -m workbench prepare --all` runs the same steps in a terminal. Set
`WORKBENCH_AUTOPREPARE=0` (for example on a lab server with its own build plan) to turn the
background start off, or `WORKBENCH_AUTOPREPARE=quick` to leave the full SAE out.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from filelock import FileLock, Timeout

from workbench.config import Settings
from workbench.models import ModelBundle
from workbench.models.depth import at_depth, layers_at_depth
from workbench.progress import NULL_PROGRESS, Progress
from workbench.sae.catalogue import CATALOGUE_TOKENS
from workbench.sae.train import SAETrainConfig
from workbench.store import Store

ENV_SWITCH = "WORKBENCH_AUTOPREPARE"
JOB_KIND = "first-start"


def _quick_sae() -> SAETrainConfig:
    # a first look within minutes: 80k training tokens, 10k held-out tokens for its metrics
    return SAETrainConfig(width=1024, k=32, tokens=80_000, eval_tokens=10_000)


def _edit_layers() -> tuple[int, ...]:
    from workbench.methods.optimise import DEFAULT_LAYERS

    return DEFAULT_LAYERS


@dataclass(frozen=True)
class FirstStartConfig:
    """What the first start builds. Defaults fit 2 cores: pages fill within minutes."""

    stat_tokens: int = 10_000  # `prepare` defaults to 20k; 10k halve the wait for the Neurons page
    concepts: tuple[str, ...] = ("Harry Potter", "Paris")
    concept_docs: int = 32
    quick_sae: SAETrainConfig = field(default_factory=_quick_sae)
    full_sae: SAETrainConfig | None = field(default_factory=SAETrainConfig)
    quick_catalogue_tokens: int = 15_000
    full_catalogue_tokens: int = CATALOGUE_TOKENS
    edit_layers: tuple[int, ...] = field(default_factory=_edit_layers)  # vocab-projected right after the SAE layer

    def fitted(self, n_layers: int) -> FirstStartConfig:
        """The same plan on a model of `n_layers` layers: the SAE and edit layers (stated on the
        18-layer reference model) at the same relative depth (models/depth.py)."""
        full = None if self.full_sae is None else replace(self.full_sae, layer=at_depth(self.full_sae.layer, n_layers))
        return replace(self, quick_sae=replace(self.quick_sae, layer=at_depth(self.quick_sae.layer, n_layers)),
                       full_sae=full, edit_layers=layers_at_depth(self.edit_layers, n_layers))


def _switch(env: dict[str, str] | None) -> str:
    return (env if env is not None else os.environ).get(ENV_SWITCH, "1").strip().lower()


def enabled(env: dict[str, str] | None = None) -> bool:
    """False when WORKBENCH_AUTOPREPARE is 0/false/no/off."""
    return _switch(env) not in ("0", "false", "no", "off")


def config_from_env(env: dict[str, str] | None = None) -> FirstStartConfig:
    """The default plan; WORKBENCH_AUTOPREPARE=quick leaves out the full SAE (a laptop that
    only wants a first look, or a test)."""
    return FirstStartConfig(full_sae=None) if _switch(env) == "quick" else FirstStartConfig()


def layer_order(n_layers: int, sae_layer: int, edit_layers: tuple[int, ...]) -> list[list[int]]:
    """Vocab-projection layers in chunks, most-used first: [SAE layer], [edited layers], [rest]."""
    first = [min(sae_layer, n_layers - 1)]
    second = [layer for layer in edit_layers if layer < n_layers and layer not in first]
    rest = [layer for layer in range(n_layers) if layer not in first and layer not in second]
    return [chunk for chunk in (first, second, rest) if chunk]


@dataclass(frozen=True)
class Step:
    """One step of the first start: what it builds, the page it feeds, and whether it is done."""

    key: str
    title: str
    page: str
    done: bool


def steps(store: Store, bundle: ModelBundle, cfg: FirstStartConfig = FirstStartConfig()) -> list[Step]:
    """The plan with what is already built (read from the store; cheap, called by every page)."""
    from workbench.corpus.concept import slug

    cfg = cfg.fitted(bundle.n_layers)
    model = bundle.model_id
    builds = store.builds(model)
    built = set(builds["artefact"].astype(str) + "|" + builds["part"].astype(str))
    layers = range(bundle.n_layers)
    chunks = layer_order(bundle.n_layers, cfg.quick_sae.layer, cfg.edit_layers)
    first_layers = [layer for chunk in chunks[:2] for layer in chunk]

    def vocab_done(which: list[int] | range) -> bool:
        return all(f"vocab:gain_aware|layer={layer}" in built for layer in which)

    # statistics on at least the plan's tokens count (`prepare` builds 20k, the first start 10k)
    prefix = "stats:mlp.hook_pre:wiki-en:"
    stat_sizes = {key[len(prefix):].split("|")[0] for key in built if key.startswith(prefix)}
    stats_done = any(size.isdigit() and int(size) >= cfg.stat_tokens
                     and all(f"{prefix}{size}|layer={layer}" in built for layer in layers) for size in stat_sizes)
    concept_done = all(f"concept:{slug(name)}|all" in built for name in cfg.concepts)
    saes = set(store.list_saes(model)["sae_id"])
    quick_id = cfg.quick_sae.sae_id(model, bundle.weights_sha256)
    out = [
        Step("vocab", f"vocab projections of the most-used layers ({', '.join(map(str, first_layers))})",
             "Feature browser → value vectors", vocab_done(first_layers)),
        Step("stats", f"neuron statistics on {cfg.stat_tokens:,} corpus tokens", "Neurons", stats_done),
        Step("concepts", f"concept sets ({', '.join(cfg.concepts)})", "Concept vectors, Neurons", concept_done),
        Step("quick_sae", f"quick SAE (width {cfg.quick_sae.width}) and its catalogue", "Feature browser",
             quick_id in saes),
        Step("vocab_rest", "vocab projections of the other layers", "Feature browser → value vectors",
             vocab_done(layers)),
    ]
    if cfg.full_sae is not None:
        out.append(Step("full_sae", f"full SAE (width {cfg.full_sae.width}) and its catalogue", "Feature browser",
                        cfg.full_sae.sae_id(model, bundle.weights_sha256) in saes))
    return out


def run_first_start(
    store: Store, bundle: ModelBundle, settings: Settings, cfg: FirstStartConfig = FirstStartConfig(),
    progress: Progress = NULL_PROGRESS,
) -> list[str]:
    """Build every step that is not done yet, in order; returns one line per step.

    Safe to interrupt and rerun: each build skips what the store (or the SAE folder) holds."""
    from workbench.corpus import load_wiki
    from workbench.prepare import (
        PrepareConfig,
        build_concepts,
        build_neuron_stats,
        build_vocab_projections,
        register_model,
    )

    cfg = cfg.fitted(bundle.n_layers)
    plan = steps(store, bundle, cfg)
    lines: list[str] = []
    register_model(store, bundle)
    wiki = load_wiki("en")

    def step(key: str, build: Callable[[], str]) -> None:
        todo = next((s for s in plan if s.key == key), None)
        if todo is None:
            return
        number = [s.key for s in plan].index(key) + 1
        if todo.done:
            lines.append(f"{number}/{len(plan)} {todo.title}: already built")
            return
        progress.message(f"First start, step {number}/{len(plan)}: {todo.title} (feeds {todo.page})")
        lines.append(f"{number}/{len(plan)} {todo.title}: {build()}")

    chunks = layer_order(bundle.n_layers, cfg.quick_sae.layer, cfg.edit_layers)

    def vocab(parts: list[list[int]]) -> str:
        n = 0
        for chunk in parts:
            n += sum(not r.skipped for r in build_vocab_projections(store, bundle, PrepareConfig(layers=chunk), progress))
        return f"{n} layer(s) built"

    prepare_cfg = PrepareConfig(stat_tokens=cfg.stat_tokens, concepts=list(cfg.concepts), concept_docs=cfg.concept_docs)
    step("vocab", lambda: vocab(chunks[:2]))
    step("stats", lambda: f"{len(build_neuron_stats(store, bundle, wiki, prepare_cfg, progress))} layer(s)")
    step("concepts", lambda: f"{len(build_concepts(store, bundle, wiki, prepare_cfg, progress))} concept(s)")
    step("quick_sae", lambda: _sae(store, bundle, settings, cfg.quick_sae, cfg.quick_catalogue_tokens, progress))
    step("vocab_rest", lambda: vocab(chunks[2:]))
    if cfg.full_sae is not None:
        full = cfg.full_sae
        step("full_sae", lambda: _sae(store, bundle, settings, full, cfg.full_catalogue_tokens, progress))
    return lines


def _sae(store: Store, bundle: ModelBundle, settings: Settings, cfg: SAETrainConfig, catalogue_tokens: int,
         progress: Progress) -> str:
    from workbench.sae.index import catalogue_into_store
    from workbench.sae.train import train_sae

    result = train_sae(bundle, cfg, settings, progress=progress)
    m = result.metrics
    catalogue_into_store(store, bundle, result.sae, result.sae_id, result.sha256, result.path, m.to_dict(),
                         max_tokens=catalogue_tokens, progress=progress)
    return f"{result.sae_id}: EV {m.explained_variance:.3f}, L0 {m.l0:.1f}, catalogued"


def maybe_start(manager: Any, store: Store, bundle: ModelBundle, settings: Settings,
                cfg: FirstStartConfig | None = None) -> str | None:
    """Start the first start as a background job of this server, unless it is turned off,
    everything is built, it already runs here, or another process on this cache runs it (a
    file lock decides; the other process's progress file is what the pages then show).
    Returns the job id when one was started."""
    cfg = cfg or config_from_env()
    if not enabled() or manager.running(JOB_KIND) or all(s.done for s in steps(store, bundle, cfg)):
        return None
    # thread_local=False: the lock is taken here and released by the job's thread
    lock = FileLock(str(settings.cache_dir / ".first-start.lock"), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None

    def run(progress: Any) -> str:
        try:
            return "; ".join(run_first_start(store, bundle, settings, cfg, progress))
        finally:
            lock.release()

    try:
        return str(manager.start(JOB_KIND, "First start: preparing every page", run))
    except BaseException:
        lock.release()
        raise
