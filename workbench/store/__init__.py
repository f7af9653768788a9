"""The DuckDB store (cache/workbench.duckdb), split by what it stores. The only package with SQL.

- `schema`: the ordered migrations;
- `core`: connection, transactions, atomic slices, builds, models;
- `lenses`: value vectors, neuron statistics, concept sets and vectors;
- `saes`: SAE catalogues and feature queries;
- `edits`: saved edits;
- `library`: the lab's shared edit library (published edits).

`Store` is one object with all of their methods:

    store = open_store(settings.store_path)
    store.neurons_matching("gemma-3-270m", "Paris")
    store.search_features(sae_id, "river")
"""

from __future__ import annotations

import time
from pathlib import Path

from workbench.store.core import Slice, SliceRows, StoreBusyError
from workbench.store.edits import EditTables
from workbench.store.lenses import LensTables
from workbench.store.library import LibraryTables
from workbench.store.saes import SAE_TABLES, SaeTables
from workbench.store.schema import MIGRATIONS, SCHEMA_VERSION


class Store(LensTables, SaeTables, EditTables, LibraryTables):
    """A DuckDB file with the workbench schema. Thread-safe: one cursor per thread, one writer."""


def open_store(path: Path, read_only: bool = False, retries: int = 0, wait_s: float = 0.5) -> Store:
    """Open the store, retrying briefly if another process holds the lock."""
    for attempt in range(retries + 1):
        try:
            return Store(path, read_only=read_only)
        except StoreBusyError:
            if attempt == retries:
                raise
            time.sleep(wait_s)
    raise AssertionError("unreachable")


__all__ = ["MIGRATIONS", "SAE_TABLES", "SCHEMA_VERSION", "Slice", "SliceRows", "Store", "StoreBusyError",
           "open_store"]
