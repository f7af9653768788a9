"""The lab's shared edit library: one row per published edit (its payload file lives beside the
store, workbench/edits/library.py). Withdrawn entries are deleted, not marked."""

from __future__ import annotations

from typing import Any

import pandas as pd

from workbench.store.core import StoreCore

LIBRARY_COLUMNS = (
    "entry_id", "model_id", "weights_sha256", "name", "author", "note", "spec_sha256", "spec_json",
    "operations_json", "payload_file", "payload_sha256", "payload_bytes", "concept", "tier", "score",
    "outcome", "metrics_json", "verdicts_json",
)


class LibraryTables(StoreCore):
    """Published edits."""

    def has_library(self) -> bool:
        """Whether this store has the library table (a read-only store of an older schema has not)."""
        return self.schema_version() >= 4

    def save_library_entry(self, row: dict[str, Any]) -> None:
        """Insert or replace the entry `row["entry_id"]` (every LIBRARY_COLUMNS key), published now."""
        missing = sorted(set(LIBRARY_COLUMNS) - set(row))
        if missing:
            raise KeyError(f"A library row needs {missing}.")
        cols = ", ".join(LIBRARY_COLUMNS)
        marks = ", ".join("?" for _ in LIBRARY_COLUMNS)
        with self.transaction() as cur:
            cur.execute(f"INSERT OR REPLACE INTO library ({cols}, published_at) VALUES ({marks}, current_timestamp)",
                        [row[c] for c in LIBRARY_COLUMNS])

    def library_rows(self, model_id: str | None = None, entry_id: str | None = None) -> pd.DataFrame:
        """Published entries newest first, of one model and/or one entry id when given (none on a
        store without the table)."""
        if not self.has_library():
            return pd.DataFrame(columns=[*LIBRARY_COLUMNS, "published_at"])
        return self.rows_where("library", "published_at DESC, entry_id", model_id=model_id, entry_id=entry_id)

    def delete_library_entry(self, entry_id: str, author: str) -> bool:
        """Delete the entry if `author` published it; whether a row was deleted."""
        with self.transaction() as cur:
            row = cur.execute("SELECT count(*) FROM library WHERE entry_id = ? AND author = ?",
                              [entry_id, author]).fetchone()
            if not row or not row[0]:
                return False
            cur.execute("DELETE FROM library WHERE entry_id = ? AND author = ?", [entry_id, author])
        return True
