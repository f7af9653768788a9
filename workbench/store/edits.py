"""The table of saved edits (spec JSON and scorecard metrics per edit)."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from workbench.store.core import StoreCore


class EditTables(StoreCore):
    """Saved edits."""

    # -- edits ----------------------------------------------------------------------------------
    def save_edit(self, edit_id: str, model_id: str, name: str, spec_json: str,
                  metrics: dict[str, Any] | None = None) -> None:
        with self.transaction() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO edits (edit_id, model_id, name, spec_json, metrics_json, "
                "created_at) VALUES (?, ?, ?, ?, ?, current_timestamp)",
                [edit_id, model_id, name, spec_json, json.dumps(metrics or {}, default=str)],
            )

    def edits(self, model_id: str | None = None) -> pd.DataFrame:
        if model_id is None:
            return self.df("SELECT * FROM edits ORDER BY created_at DESC")
        return self.df("SELECT * FROM edits WHERE model_id = ? ORDER BY created_at DESC", [model_id])
