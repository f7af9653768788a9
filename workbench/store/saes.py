"""Tables of SAE catalogues: saes, features, feature_tokens, feature_examples,
row_feature_scores and feature_contrast, and the Feature browser's queries. One SAE's
catalogue is replaced in a single transaction."""

from __future__ import annotations

from typing import Any

import pandas as pd

from workbench.pause import pause_point
from workbench.store.core import StoreCore

SAE_TABLES = ("features", "feature_tokens", "feature_examples", "row_feature_scores", "feature_contrast")


def _norm_token(token: str) -> str:
    return token.strip().lower()


class SaeTables(StoreCore):
    """SAE catalogues and their queries."""

    def save_sae_catalogue(self, sae_row: dict[str, Any],
        features: pd.DataFrame,
        tokens: pd.DataFrame,
        examples: pd.DataFrame,
        row_scores: pd.DataFrame | None = None,
    ) -> None:
        """Replace everything stored about sae_row['sae_id'] in ONE transaction (all or nothing).

        sae_row keys: sae_id, model_id, hook, layer, d_sae, k, architecture, source, trained_on,
        metrics_json, path, sha256, lens, corpus_id, n_tokens, seconds. Labels a user has set
        (label != auto_label) survive a rebuild."""
        sae_id = sae_row["sae_id"]
        feats = features.copy()
        feats["sae_id"] = sae_id
        feats["auto_label"] = feats["label"]
        feats["search_text"] = (feats["label"] + " | " + feats["top_tokens"].map(" ".join)).str.lower()
        toks = tokens.copy()
        toks["sae_id"] = sae_id
        toks["token_norm"] = toks["token"].map(_norm_token)
        exs = examples.copy()
        exs["sae_id"] = sae_id
        frames = {"features": feats, "feature_tokens": toks, "feature_examples": exs}
        if row_scores is not None:
            rs = row_scores.copy()
            rs["sae_id"] = sae_id
            frames["row_feature_scores"] = rs
        cols = ["sae_id", "model_id", "hook", "layer", "d_sae", "k", "architecture", "source",
                "trained_on", "metrics_json", "path", "sha256", "lens", "corpus_id", "n_tokens", "seconds"]
        with self.transaction() as cur:
            kept = cur.execute(
                "SELECT feature, label FROM features WHERE sae_id = ? AND label IS DISTINCT FROM auto_label",
                [sae_id]).fetchall()
            for table in frames:
                cur.execute(f"DELETE FROM {table} WHERE sae_id = ?", [sae_id])
                frame = frames[table]
                if len(frame):
                    cur.register("incoming", frame)
                    names = ", ".join(c for c in frame.columns)
                    cur.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM incoming")
                    cur.unregister("incoming")
            for feature, label in kept:
                cur.execute("UPDATE features SET label = ? WHERE sae_id = ? AND feature = ?",
                            [label, sae_id, feature])
            pause_point(f"store:sae/{sae_id}")  # crash tests only; the saes row is the catalogue's "done" mark
            cur.execute(f"INSERT OR REPLACE INTO saes ({', '.join(cols)}, built_at) VALUES "
                        f"({', '.join('?' for _ in cols)}, current_timestamp)", [sae_row.get(c) for c in cols])

    def save_feature_contrast(self, sae_id: str, concept_id: str, contrast: pd.DataFrame) -> None:
        frame = contrast[["feature", "mean_pos", "mean_neg", "freq_pos", "freq_neg", "diff"]].copy()
        frame["sae_id"] = sae_id
        frame["concept_id"] = concept_id
        with self.transaction() as cur:
            cur.execute("DELETE FROM feature_contrast WHERE sae_id = ? AND concept_id = ?", [sae_id, concept_id])
            cur.register("incoming", frame)
            names = ", ".join(frame.columns)
            cur.execute(f"INSERT INTO feature_contrast ({names}) SELECT {names} FROM incoming")
            cur.unregister("incoming")

    def list_saes(self, model_id: str | None = None) -> pd.DataFrame:
        sql = ("SELECT sae_id, model_id, hook, layer, d_sae, k, architecture, source, metrics_json, "
               "sha256, path, corpus_id, n_tokens, built_at FROM saes")
        if model_id is None:
            return self.df(sql + " ORDER BY built_at")
        return self.df(sql + " WHERE model_id = ? ORDER BY built_at", [model_id])

    def search_features(self, sae_id: str, text: str, limit: int = 50) -> pd.DataFrame:
        """Features for a word, best evidence first; live features (density > 0) before dead ones:
        1. 'fires_on': the word is one of the feature's top-activating tokens in the corpus;
        2. 'token': the word is among the top/bottom vocab tokens of the decoder direction;
        3. 'label': the label or the top vocab tokens contain the text.
        Matching ignores case and surrounding spaces. Columns: feature, label, density, max_act,
        match, side, rank, logit, top_tokens."""
        q = _norm_token(text)
        if not q:
            raise ValueError("Search text is empty.")
        # One statement (each round trip costs ~5 ms): candidates from the three sources, the best
        # match per feature kept, live features first, then by source priority.
        return self.cur.execute(
            """
            WITH hits AS (
                SELECT feature, 0 AS priority, 'fires_on' AS match, NULL AS side,
                       min(rank) AS rank, max(activation) AS logit, -count(*) AS tiebreak
                FROM feature_examples WHERE sae_id = $sae AND lower(trim(token)) = $q
                GROUP BY feature
                UNION ALL
                SELECT feature, 1, 'token', side, rank, logit, rank
                FROM feature_tokens WHERE sae_id = $sae AND token_norm = $q
                UNION ALL
                SELECT feature, 2, 'label', NULL, NULL, NULL, 0
                FROM features WHERE sae_id = $sae AND search_text LIKE $like)
            SELECT h.feature, f.label, f.density, f.max_act, h.match, h.side, h.rank, h.logit,
                   f.top_tokens
            FROM hits h JOIN features f ON f.sae_id = $sae AND f.feature = h.feature
            QUALIFY row_number() OVER (PARTITION BY h.feature ORDER BY h.priority, h.tiebreak) = 1
            ORDER BY f.density > 0 DESC, h.priority, h.tiebreak, abs(h.logit) DESC NULLS LAST,
                     f.max_act DESC
            LIMIT $limit
            """,
            {"sae": sae_id, "q": q, "like": f"%{q}%", "limit": limit},
        ).df()

    def feature_labels(self, sae_id: str, features: list[int]) -> dict[int, str]:
        """{feature: label} for the given features of an SAE (missing ones left out)."""
        if not features:
            return {}
        frame = self.df("SELECT feature, label FROM features WHERE sae_id = ? AND list_contains(?, feature)",
                         [sae_id, features])
        return {int(f): str(label) for f, label in zip(frame["feature"], frame["label"], strict=True)}

    def feature_densities(self, sae_id: str) -> pd.DataFrame:
        """feature, density of every catalogued feature of an SAE (for the density histogram)."""
        return self.df("SELECT feature, density FROM features WHERE sae_id = ? ORDER BY feature", [sae_id])

    def feature_detail(self, sae_id: str, feature: int) -> dict[str, Any]:
        """One feature: its row of `features`, its tokens and its examples."""
        row = self.df("SELECT * FROM features WHERE sae_id = ? AND feature = ?", [sae_id, feature])
        if row.empty:
            raise KeyError(f"SAE {sae_id!r} has no catalogued feature {feature}.")
        return {
            **row.iloc[0].to_dict(),
            "tokens": self.df("SELECT side, rank, token_id, token, logit FROM feature_tokens WHERE "
                               "sae_id = ? AND feature = ? ORDER BY side DESC, rank", [sae_id, feature]),
            "examples": self.df("SELECT rank, doc_id, title, topic, token_pos, token, activation, snippet "
                                 "FROM feature_examples WHERE sae_id = ? AND feature = ? ORDER BY rank",
                                 [sae_id, feature]),
        }

    def features_of_row(self, sae_id: str, neuron: int, limit: int = 16) -> pd.DataFrame:
        """Features with the largest |s[i, f]| for W_out row `neuron` (stored top scores)."""
        return self.df(
            "SELECT r.feature, r.score, r.row_rank, f.label, f.top_tokens FROM row_feature_scores r "
            "JOIN features f USING (sae_id, feature) WHERE r.sae_id = ? AND r.neuron = ? "
            "AND r.row_rank >= 0 ORDER BY abs(r.score) DESC LIMIT ?", [sae_id, neuron, limit])

    def rows_of_feature(self, sae_id: str, feature: int, limit: int = 16) -> pd.DataFrame:
        """W_out rows with the largest |s[i, f]| for `feature` (stored top scores)."""
        return self.df(
            "SELECT neuron, score, feature_rank FROM row_feature_scores WHERE sae_id = ? AND feature = ? "
            "AND feature_rank >= 0 ORDER BY abs(score) DESC LIMIT ?", [sae_id, feature, limit])

    def features_by_contrast(self, sae_id: str, concept_id: str, limit: int = 50) -> pd.DataFrame:
        """Features ranked by mean activation on the concept's documents minus neutral ones."""
        return self.df(
            "SELECT c.feature, c.mean_pos, c.mean_neg, c.freq_pos, c.freq_neg, c.diff, f.label, "
            "f.top_tokens FROM feature_contrast c JOIN features f USING (sae_id, feature) "
            "WHERE c.sae_id = ? AND c.concept_id = ? ORDER BY c.diff DESC LIMIT ?",
            [sae_id, concept_id, limit])

    def set_feature_label(self, sae_id: str, feature: int, label: str) -> None:
        label = label.strip()
        if not label:
            raise ValueError("A feature label cannot be empty.")
        with self.transaction() as cur:
            n = cur.execute("SELECT count(*) FROM features WHERE sae_id = ? AND feature = ?",
                            [sae_id, feature]).fetchone()
            if not n or not n[0]:
                raise KeyError(f"SAE {sae_id!r} has no catalogued feature {feature}.")
            cur.execute("UPDATE features SET label = ?, search_text = lower(? || ' | ' || "
                        "array_to_string(top_tokens, ' ')) WHERE sae_id = ? AND feature = ?",
                        [label, label, sae_id, feature])
