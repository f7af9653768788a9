"""Each build's "done" mark is written in the same transaction as its rows, after them: a concept
is never marked built without its histograms, and a failed write leaves none of it."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest

from workbench.store import SliceRows, Store


def hist(corpus_id: str, layer: int) -> dict[str, pd.DataFrame]:
    return {"hist_edges": pd.DataFrame({"model_id": ["m"], "corpus_id": [corpus_id], "site": ["s"],
                                        "layer": [layer], "edges": [[0.0, 1.0]]})}


def concept_slices(bad_last: bool = False) -> list[SliceRows]:
    slices = [SliceRows(f"stats:s:concept:c:{side}", "layer=0", hist(f"concept:c:{side}", 0),
                        {"model_id": "m", "corpus_id": f"concept:c:{side}", "site": "s", "layer": 0})
              for side in ("pos", "neg")]
    vectors = pd.DataFrame({"model_id": ["m"], "concept_id": ["c"], "site": ["resid"], "layer": [0], "norm": [1.0]})
    if bad_last:
        vectors = vectors.rename(columns={"norm": "no_such_column"})
    slices.append(SliceRows("concept:c", "all", {"concept_vectors": vectors}, {"model_id": "m", "concept_id": "c"}))
    return slices


def test_a_concept_and_its_histograms_are_written_together_and_marked_last(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    store.save_concept_build("m", "c", "C", ["c"], ["C"], 4, concept_slices())
    assert store.built_concepts("m") == {"c": "C"}
    assert len(store.df("SELECT * FROM hist_edges WHERE corpus_id LIKE 'concept:c:%'")) == 2
    marks = list(store.builds("m")["artefact"])
    assert set(marks) == {"stats:s:concept:c:pos", "stats:s:concept:c:neg", "concept:c"}


def test_a_failed_concept_write_leaves_nothing_of_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    with pytest.raises(duckdb.Error):
        store.save_concept_build("m", "c", "C", ["c"], ["C"], 4, concept_slices(bad_last=True))
    assert store.built_concepts("m") == {} and store.builds("m").empty
    assert store.table_counts()["hist_edges"] == 0 and store.table_counts()["concept_sets"] == 0
