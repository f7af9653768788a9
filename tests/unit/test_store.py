"""Store: migrations, round trips, atomic slices, interrupted writes, UI queries."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from workbench.corpus import load_wiki
from workbench.prepare import PrepareConfig, build_neuron_stats, build_vocab_projections, register_model
from workbench.store import SCHEMA_VERSION, Store


def _tokens(model_id: str, layer: int, n: int, token: str) -> pd.DataFrame:
    return pd.DataFrame({
        "model_id": model_id, "lens": "gain_aware", "layer": layer, "neuron": range(n), "side": "top",
        "rank": 0, "token_id": 7, "token": token, "logit": 1.5,
    })


def test_schema_created_and_reopened(tmp_path: Path):
    path = tmp_path / "s.duckdb"
    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION
    store.close()
    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION
    assert "value_vector_tokens" in store.table_counts()


def test_write_slices_replaces_atomically_and_marks_built(tmp_path: Path):
    store = Store(tmp_path / "s.duckdb")
    key = {"model_id": "m", "lens": "gain_aware", "layer": 1}
    store.write_slices("m", "vocab", "layer=1", {"value_vector_tokens": _tokens("m", 1, 5, " old")}, key)
    store.write_slices("m", "vocab", "layer=1", {"value_vector_tokens": _tokens("m", 1, 3, " new")}, key)
    frame = store.df("SELECT token FROM value_vector_tokens")
    assert list(frame["token"]) == [" new"] * 3
    assert store.is_built("m", "vocab", "layer=1")
    assert not store.is_built("m", "vocab", "layer=2")


def test_failed_write_rolls_back_to_old_data(tmp_path: Path):
    store = Store(tmp_path / "s.duckdb")
    key = {"model_id": "m", "lens": "gain_aware", "layer": 1}
    store.write_slices("m", "vocab", "layer=1", {"value_vector_tokens": _tokens("m", 1, 4, " old")}, key)
    bad = _tokens("m", 1, 4, " new").rename(columns={"logit": "no_such_column"})
    with pytest.raises(duckdb.Error):
        store.write_slices("m", "vocab", "layer=1", {"value_vector_tokens": bad}, key)
    assert list(store.df("SELECT token FROM value_vector_tokens")["token"]) == [" old"] * 4


def test_killed_writer_leaves_old_complete_data(tmp_path: Path):
    """A process killed (SIGKILL) in the middle of a transaction leaves the previous slice."""
    path = tmp_path / "s.duckdb"
    store = Store(path)
    key = {"model_id": "m", "lens": "gain_aware", "layer": 1}
    store.write_slices("m", "vocab", "layer=1", {"value_vector_tokens": _tokens("m", 1, 10, " old")}, key)
    store.close()
    script = textwrap.dedent(f"""
        import sys, time, pandas as pd
        from workbench.store import Store
        s = Store({str(path)!r})
        with s.transaction() as cur:
            cur.execute("DELETE FROM value_vector_tokens")
            frame = pd.DataFrame({{"model_id": "m", "lens": "gain_aware", "layer": 1, "neuron": range(50000),
                                  "side": "top", "rank": 0, "token_id": 1, "token": " new", "logit": 0.0}})
            cur.register("f", frame)
            cur.execute("INSERT INTO value_vector_tokens SELECT * FROM f")
            print("inside", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "inside"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = Store(path)
    tokens = store.df("SELECT token, count(*) AS n FROM value_vector_tokens GROUP BY token")
    assert tokens.to_dict("records") == [{"token": " old", "n": 10}]


def test_prepare_resumes_and_answers_ui_queries(tiny_bundle, tmp_path: Path):
    store = Store(tmp_path / "s.duckdb")
    register_model(store, tiny_bundle)
    cfg = PrepareConfig(layers=[0, 1], stat_tokens=1500, corpus_docs=60)
    first = build_vocab_projections(store, tiny_bundle, cfg)
    assert [r.skipped for r in first] == [False, False]
    cfg2 = PrepareConfig(layers=[0, 1, 2], stat_tokens=1500, corpus_docs=60)
    second = build_vocab_projections(store, tiny_bundle, cfg2)
    assert sorted((r.part, r.skipped) for r in second) == [("layer=0", True), ("layer=1", True), ("layer=2", False)]
    # Neurons of a layer whose top tokens contain a given token, straight from the store.
    row = store.df("SELECT layer, neuron, token FROM value_vector_tokens WHERE side = 'top' AND rank = 0 LIMIT 1").iloc[0]
    hits = store.neurons_with_token(tiny_bundle.model_id, row.token, layer=int(row.layer))
    assert int(row.neuron) in set(hits["neuron"])
    build_neuron_stats(store, tiny_bundle, load_wiki("en"), cfg)
    hist = store.neuron_histogram(tiny_bundle.model_id, 1, 100)
    assert hist["counts"].sum() == hist["n"] > 1000
    assert len(hist["edges"]) == len(hist["counts"]) + 1
    with pytest.raises(KeyError, match="prepare"):
        store.neuron_histogram(tiny_bundle.model_id, 3, 100)


def test_store_busy_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "s.duckdb"
    Store(path).close()
    script = f"import time; from workbench.store import Store; s = Store({str(path)!r}); print('open', flush=True); time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "open"
        from workbench.store import StoreBusyError

        with pytest.raises(StoreBusyError, match="locked by another process"):
            Store(path)
    finally:
        proc.kill()
        proc.wait()  # reaped: its lock on the file is gone with it


def test_value_vector_search_ranks_exact_tokens_above_substrings(tmp_path: Path):
    store = Store(tmp_path / "s.duckdb")
    rows = pd.DataFrame({
        "model_id": "m", "lens": "gain_aware", "layer": 1, "side": "top",
        # neuron 0: three ' Parish'-like substrings at the top; neuron 1: one exact ' Paris' at rank 5
        "neuron": [0, 0, 0, 1, 1], "rank": [0, 1, 2, 0, 5], "token_id": [1, 2, 3, 4, 5],
        "token": [" Parish", " parishes", "Parisian", " river", " Paris"], "logit": 1.0,
    })
    store.write_slices("m", "vocab", "layer=1", {"value_vector_tokens": rows},
                       {"model_id": "m", "lens": "gain_aware", "layer": 1})
    hits = store.neurons_matching("m", "paris")
    assert list(hits["neuron"]) == [1, 0]
    assert list(hits["exact"]) == [1, 0] and list(hits["hits"]) == [1, 3]


def test_built_concepts_lists_only_sets_built_for_that_model(tmp_path: Path):
    store = Store(tmp_path / "s.duckdb")
    store.save_concept_set("hp", "Harry Potter", [], ["Harry Potter"], 10)
    store.save_concept_set("paris", "Paris", [], ["Paris"], 10)
    store.save_concept_set("chess", "Chess", [], ["Chess"], 10)
    assert store.built_concepts("m") == {}  # saved, but nothing built yet
    store.write_slices("m", "concept:paris", "all", {}, {})
    store.write_slices("m", "concept:hp", "all", {}, {})
    store.write_slices("other", "concept:chess", "all", {}, {})
    store.write_slices("m", "concept:chess", "layer=1", {}, {})  # a part, not the whole concept
    assert store.built_concepts("m") == {"hp": "Harry Potter", "paris": "Paris"}
    assert list(store.built_concepts("m")) == ["hp", "paris"]  # oldest concept set first
    assert store.built_concepts("other") == {"chess": "Chess"}
