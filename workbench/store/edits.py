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
                  metrics: dict[str, Any] | None = None, owner: str | None = None) -> None:
        """Save (or replace) an edit; `owner`: the server user who saved it (None: no user)."""
        with self.transaction() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO edits (edit_id, model_id, name, spec_json, metrics_json, "
                "created_at, owner) VALUES (?, ?, ?, ?, ?, current_timestamp, ?)",
                [edit_id, model_id, name, spec_json, json.dumps(metrics or {}, default=str), owner],
            )

    def edits(self, model_id: str | None = None, owner: str | None = None) -> pd.DataFrame:
        """Saved edits newest first, of one model and/or one owner when given."""
        return self.rows_where("edits", "created_at DESC", model_id=model_id, owner=owner)
