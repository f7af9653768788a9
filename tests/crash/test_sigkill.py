"""SIGKILL in the middle of every build, then the store and the folders are checked and the same
command is rerun: `prepare` (vocab projections, neuron statistics, a concept), `sae train` with
its catalogue, and `export-checkpoint`. Each kill happens at a named pause point
(WORKBENCH_TEST_PAUSE_AT, workbench/pause.py) that the test waits for on the process's stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from crash_helpers import kill_at, leftovers, run, store_problems

from tests.conftest import MODELS_CACHE
from workbench.models import ModelBundle
from workbench.sae.sources import list_local_saes
from workbench.store import open_store

pytestmark = pytest.mark.crash


@pytest.fixture
def cache(tmp_path: Path, tiny_bundle: ModelBundle) -> Path:
    """A fresh cache and store; the tiny checkpoint is shared (built by `tiny_bundle`)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "models").symlink_to(MODELS_CACHE.resolve(), target_is_directory=True)
    return cache


def built(cache: Path) -> set[tuple[str, str]]:
    store = open_store(cache / "workbench.duckdb", read_only=True)
    try:
        return {(r.artefact, r.part) for r in store.builds().itertuples()}
    finally:
        store.close()


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_prepare_killed_in_the_statistics_and_in_a_concept_resumes(cache: Path) -> None:
    args = ("prepare", "--layers", "0-1", "--tokens", "1000", "--concept", "Paris")
    stats = "stats:mlp.hook_pre:wiki-en:1000"
    # killed inside the transaction of the first statistics slice: vocab layers kept, no statistics
    assert kill_at(cache, "store:stats:", *args) == f"store:{stats}/layer=0"
    assert store_problems(cache / "workbench.duckdb") == []
    assert built(cache) == {("vocab:gain_aware", "layer=0"), ("vocab:gain_aware", "layer=1")}
    # killed inside the concept's transaction (its histograms and set written, its mark not yet)
    assert kill_at(cache, "store:concept:", *args) == "store:concept:paris/all"
    assert store_problems(cache / "workbench.duckdb") == []
    after = built(cache)
    assert {(stats, "layer=0"), (stats, "layer=1")} <= after
    assert not any(a.startswith(("concept:", "stats:mlp.hook_pre:concept:")) for a, _ in after)
    # the rerun resumes and completes
    done = run(cache, *args)
    assert "built      concept:paris" in done.stdout and "built      stats" not in done.stdout, done.stdout
    assert "built      vocab" not in done.stdout, done.stdout  # vocab and statistics were not rebuilt
    assert store_problems(cache / "workbench.duckdb") == []
    assert ("concept:paris", "all") in built(cache)


def test_sae_train_killed_before_its_folder_and_in_its_catalogue_resumes(cache: Path) -> None:
    args = ("sae", "train", "--layer", "1", "--tokens", "2048", "--width", "64", "--k", "4",
            "--catalogue-tokens", "1000")
    saes = cache / "saes"
    # killed with the SAE written under its temporary name: nothing at the target, nothing listed
    stage = kill_at(cache, "publish:tiny-gemma3.l1", *args)
    sae_id = stage.removeprefix("publish:")
    assert not (saes / sae_id).exists() and leftovers(saes)  # only the half folder, under a hidden name
    assert list_local_saes(saes) == [] and leftovers(saes) == []  # a reader cleans the dead build's folder
    # trained again and published, killed inside the catalogue's transaction: no catalogue row, no features
    assert kill_at(cache, f"store:sae/{sae_id}", *args) == f"store:sae/{sae_id}"
    assert (saes / sae_id / "workbench_metrics.json").exists() and leftovers(saes) == []
    assert store_problems(cache / "workbench.duckdb") == []
    store = open_store(cache / "workbench.duckdb", read_only=True)
    try:
        assert store.list_saes().empty
    finally:
        store.close()
    # the rerun loads the published SAE (not trained again) and catalogues it
    done = run(cache, *args)
    assert "already trained" in done.stdout + done.stderr, done.stderr[-2000:]
    assert store_problems(cache / "workbench.duckdb") == []
    store = open_store(cache / "workbench.duckdb", read_only=True)
    try:
        assert list(store.list_saes()["sae_id"]) == [sae_id]
    finally:
        store.close()


def test_export_killed_before_and_during_a_replacement_leaves_a_whole_folder(
    cache: Path, tiny_bundle: ModelBundle, tmp_path: Path,
) -> None:
    spec = tmp_path / "edit.json"
    spec.write_text(json.dumps({
        "name": "crash", "model": {"id": tiny_bundle.model_id, "weights_sha256": tiny_bundle.weights_sha256},
        "operations": [{"kind": "ablate_value_vectors", "layer": 1, "neurons": [0, 1]}]}))
    out = tmp_path / "exports" / "crash-export"
    args = ("export-checkpoint", str(spec), "--out", str(out))
    # killed with the checkpoint written under its temporary name: no folder at --out
    assert kill_at(cache, "publish:crash-export", *args) == "publish:crash-export"
    assert not out.exists() and leftovers(out.parent)
    run(cache, *args)  # the rerun writes it and deletes the dead build's temporary folder
    assert (out / "model.safetensors").exists() and leftovers(out.parent) == []
    first = tensors(out)
    # killed while replacing it: the old folder was set aside whole, never deleted
    assert kill_at(cache, "swap:crash-export", *args, "--overwrite") == "swap:crash-export"
    assert not out.exists()
    (aside,) = [out.parent / n for n in leftovers(out.parent) if ".old-" in n]
    assert same(tensors(aside), first)
    run(cache, *args, "--overwrite")  # recovers the old folder, then replaces it
    assert same(tensors(out), first) and leftovers(out.parent) == []
    assert sorted(p.name for p in out.parent.iterdir()) == ["crash-export"]
