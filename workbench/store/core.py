"""The store's core: the DuckDB connection (a cursor per thread, one writer), migrations,
transactions, and the slices every build writes.

Every build writes one slice (e.g. the vocab projection of one layer) in one transaction that
first deletes the old slice, then inserts the new one and marks the slice complete in
`builds`. An interrupted build therefore leaves the old complete slice or the new complete
slice, never half of one, and a rerun skips the slices that `builds` marks complete.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from workbench.pause import pause_point
from workbench.store.schema import MIGRATIONS, SCHEMA_VERSION


class StoreBusyError(RuntimeError):
    """Another process holds the DuckDB file (DuckDB allows one writing process)."""


@dataclass(frozen=True)
class Slice:
    """One unit of a build: rows of `table` matching `key`, replaced as a whole."""

    table: str
    key: dict[str, Any]


@dataclass(frozen=True)
class SliceRows:
    """One slice a build writes: `frames[table]` replace the rows matching `key` in each table,
    and (model_id, artefact, part) is marked built."""

    artefact: str
    part: str
    frames: dict[str, pd.DataFrame]
    key: dict[str, Any]
    params: dict[str, Any] | None = None
    seconds: float = 0.0


class StoreCore:
    """A DuckDB file with the workbench schema. Thread-safe: one cursor per thread, one writer."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as err:
            raise StoreBusyError(
                f"The store {self.path} is locked by another process (is the app or another "
                f"`python -m workbench` command running?). Details: {err}"
            ) from err
        self._local = threading.local()
        self._write_lock = threading.RLock()
        if not read_only:
            self.migrate()

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def cur(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._conn.cursor()
            self._local.cur = cur
        return cur

    def close(self) -> None:
        self._conn.close()

    def schema_version(self) -> int:
        exists = self.cur.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta'"
        ).fetchone()
        if not exists or not exists[0]:
            return 0
        row = self.cur.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION, one transaction per migration."""
        with self._write_lock:
            version = self.schema_version()
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} has schema version {version}, newer than this workbench "
                    f"({SCHEMA_VERSION}). Upgrade the workbench or use another cache dir."
                )
            for target in range(version, SCHEMA_VERSION):
                with self.transaction():
                    if target == 0:
                        self.cur.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
                    for statement in MIGRATIONS[target].split(";"):
                        if statement.strip():
                            self.cur.execute(statement)
                    self.cur.execute(
                        "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(target + 1)]
                    )

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """BEGIN ... COMMIT, or ROLLBACK on any exception (KeyboardInterrupt included)."""
        with self._write_lock:
            cur = self.cur
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def df(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        return self.cur.execute(sql, list(params)).df()

    def rows_where(self, table: str, order_by: str, **equal: Any) -> pd.DataFrame:
        """SELECT * FROM `table` with `column = value` for each keyword whose value is not None,
        ordered by `order_by` (table and column names are this module's own, never user text)."""
        given = {column: value for column, value in equal.items() if value is not None}
        where = " WHERE " + " AND ".join(f"{column} = ?" for column in given) if given else ""
        return self.df(f"SELECT * FROM {table}{where} ORDER BY {order_by}", list(given.values()))

    # -- builds and slices --------------------------------------------------------------------
    def is_built(self, model_id: str, artefact: str, part: str) -> bool:
        row = self.cur.execute(
            "SELECT count(*) FROM builds WHERE model_id = ? AND artefact = ? AND part = ?",
            [model_id, artefact, part],
        ).fetchone()
        return bool(row and row[0])

    def builds(self, model_id: str | None = None) -> pd.DataFrame:
        if model_id is None:
            return self.df("SELECT * FROM builds ORDER BY finished_at")
        return self.df("SELECT * FROM builds WHERE model_id = ? ORDER BY finished_at", [model_id])

    def write_slices(
        self,
        model_id: str,
        artefact: str,
        part: str,
        frames: dict[str, pd.DataFrame],
        key: dict[str, Any],
        params: dict[str, Any] | None = None,
        seconds: float = 0.0,
    ) -> None:
        """Atomically replace the rows matching `key` in each table with `frames[table]` and
        mark (model_id, artefact, part) built. All or nothing."""
        self.write_slice_group(model_id, [SliceRows(artefact, part, frames, key, params, seconds)])

    def write_slice_group(
        self, model_id: str, slices: Sequence[SliceRows],
        first: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
    ) -> None:
        """Several slices of one build in ONE transaction: `first(cur)` (e.g. the build's own
        row), every slice's rows, then every slice's `builds` mark in order, so the last slice's
        mark (the build's "done" marker) is written after all of its rows, or nothing is."""
        with self.transaction() as cur:
            if first is not None:
                first(cur)
            for piece in slices:
                where = " AND ".join(f"{k} = ?" for k in piece.key)
                for table, frame in piece.frames.items():
                    cur.execute(f"DELETE FROM {table} WHERE {where}", list(piece.key.values()))
                    if len(frame):
                        cur.register("incoming", frame)
                        cols = ", ".join(frame.columns)
                        cur.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM incoming")
                        cur.unregister("incoming")
            if slices:
                pause_point(f"store:{slices[-1].artefact}/{slices[-1].part}")  # crash tests only
            for piece in slices:
                cur.execute(
                    "INSERT OR REPLACE INTO builds (model_id, artefact, part, params_json, seconds, "
                    "finished_at) VALUES (?, ?, ?, ?, ?, current_timestamp)",
                    [model_id, piece.artefact, piece.part, json.dumps(piece.params or {}), piece.seconds],
                )

    # -- models -------------------------------------------------------------------------------
    def upsert_model(
        self, model_id: str, source: str, path: str, weights_sha256: str, config: dict[str, Any],
        n_layers: int, d_model: int, d_mlp: int,
    ) -> None:
        with self.transaction() as cur:
            old = cur.execute(
                "SELECT weights_sha256 FROM models WHERE model_id = ?", [model_id]
            ).fetchone()
            if old and old[0] != weights_sha256:
                # Same id, different weights: every derived artefact is stale.
                for table in ("builds", "value_vectors", "value_vector_tokens", "hist_edges",
                              "neuron_stats", "neuron_contrast", "concept_vectors"):
                    cur.execute(f"DELETE FROM {table} WHERE model_id = ?", [model_id])
            cur.execute(
                "INSERT OR REPLACE INTO models (model_id, source, path, weights_sha256, "
                "config_json, n_layers, d_model, d_mlp) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [model_id, source, path, weights_sha256, json.dumps(config, default=str),
                 n_layers, d_model, d_mlp],
            )

    def models(self) -> pd.DataFrame:
        return self.df("SELECT model_id, source, path, weights_sha256, n_layers, d_model, d_mlp, "
                       "added_at FROM models ORDER BY added_at")

    # -- status -----------------------------------------------------------------------------------
    def table_counts(self) -> dict[str, int]:
        tables = self.df("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
                         "ORDER BY 1")["table_name"]
        counts = {}
        for t in tables:
            row = self.cur.execute(f"SELECT count(*) FROM {t}").fetchone()
            counts[str(t)] = int(row[0]) if row else 0
        return counts
