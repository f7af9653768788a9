"""The first start: every step in order of value, resumable, off by a switch, one runner per cache."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.unit.test_sae import TINY_CFG
from workbench.config import Settings
from workbench.first_start import (
    FirstStartConfig,
    config_from_env,
    enabled,
    layer_order,
    maybe_start,
    run_first_start,
    steps,
)
from workbench.jobs import JobManager
from workbench.progress import NullProgress
from workbench.store import Store

TINY_PLAN = FirstStartConfig(
    stat_tokens=2000, concepts=("Paris",), concept_docs=4, quick_sae=TINY_CFG,
    full_sae=replace(TINY_CFG, width=256), quick_catalogue_tokens=1500, full_catalogue_tokens=1500,
)


class Recorder(NullProgress):
    def __init__(self) -> None:
        self.stages: list[str] = []
        self.messages: list[str] = []

    def stage(self, name: str, total: int | None = None, unit: str = "it") -> None:
        self.stages.append(name)

    def message(self, text: str) -> None:
        self.messages.append(text)


def test_layer_order_puts_the_most_used_layers_first() -> None:
    assert layer_order(18, 6, (1, 2, 3, 4, 5, 6, 7, 8)) == [[6], [1, 2, 3, 4, 5, 7, 8], [0, *range(9, 18)]]
    assert layer_order(4, 6, (1, 2, 3, 4, 5, 6, 7, 8)) == [[3], [1, 2], [0]]


def test_switch_reads_the_environment() -> None:
    assert enabled({}) and enabled({"WORKBENCH_AUTOPREPARE": "1"}) and enabled({"WORKBENCH_AUTOPREPARE": "quick"})
    assert not enabled({"WORKBENCH_AUTOPREPARE": "0"}) and not enabled({"WORKBENCH_AUTOPREPARE": "off"})
    assert config_from_env({"WORKBENCH_AUTOPREPARE": "quick"}).full_sae is None
    assert config_from_env({}).full_sae is not None


def test_first_start_builds_every_step_in_order_and_a_rerun_builds_nothing(tiny_bundle, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    store = Store(settings.store_path)
    assert [s.done for s in steps(store, tiny_bundle, TINY_PLAN)] == [False] * 6
    progress = Recorder()
    lines = run_first_start(store, tiny_bundle, settings, TINY_PLAN, progress)
    assert [s.key for s in steps(store, tiny_bundle, TINY_PLAN) if s.done] == [
        "vocab", "stats", "concepts", "quick_sae", "vocab_rest", "full_sae"]
    announced = [m.split(":")[0] for m in progress.messages if m.startswith("First start")]
    assert announced == [f"First start, step {i}/6" for i in range(1, 7)]
    # vocab projections: the SAE layer's slice first, then the edited layers; the rest only after
    # the quick SAE, so every page has real content sooner
    assert [s.split(" ")[0] for s in progress.stages if s.startswith(("vocab", "neuron statistics"))][:4] == [
        "vocab", "vocab", "neuron", "vocab"]
    first = store.df("SELECT part FROM builds WHERE artefact = 'vocab:gain_aware' ORDER BY finished_at LIMIT 1")
    assert first.iloc[0, 0] == f"layer={TINY_PLAN.fitted(tiny_bundle.n_layers).quick_sae.layer}"
    assert len(store.list_saes(tiny_bundle.model_id)) == 2
    assert all("already built" not in line for line in lines)
    again = run_first_start(store, tiny_bundle, settings, TINY_PLAN, Recorder())
    assert all(line.endswith("already built") for line in again), again
    # statistics on more tokens (what `prepare` builds) count as built; on fewer they do not
    assert [s.done for s in steps(store, tiny_bundle, replace(TINY_PLAN, stat_tokens=1000))][1]
    assert not [s.done for s in steps(store, tiny_bundle, replace(TINY_PLAN, stat_tokens=4000))][1]
    store.close()


def test_maybe_start_runs_once_per_cache_and_not_when_switched_off(tiny_bundle, settings: Settings,  # type: ignore[no-untyped-def]
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from filelock import FileLock

    store = Store(settings.store_path)
    manager = JobManager(settings.jobs_dir)
    plan = replace(TINY_PLAN, full_sae=None)
    monkeypatch.setenv("WORKBENCH_AUTOPREPARE", "0")
    assert maybe_start(manager, store, tiny_bundle, settings, plan) is None and manager.jobs() == []
    monkeypatch.setenv("WORKBENCH_AUTOPREPARE", "1")
    other = FileLock(str(Path(settings.cache_dir) / ".first-start.lock"), thread_local=False)
    with other:  # another process on this cache runs the first start: this one does not
        assert maybe_start(manager, store, tiny_bundle, settings, plan) is None
    job_id = maybe_start(manager, store, tiny_bundle, settings, plan)
    assert job_id is not None
    assert maybe_start(manager, store, tiny_bundle, settings, plan) is None  # already running here
    status = manager.wait(job_id, 600)
    assert status is not None and status.state == "done", status
    assert all(s.done for s in steps(store, tiny_bundle, plan))
    assert maybe_start(manager, store, tiny_bundle, settings, plan) is None  # everything is built
    store.close()
