"""Tables of the SAE-free lenses: value vectors and their vocab tokens, neuron statistics and
histograms, concept sets, neuron contrast and concept vectors (written by workbench.prepare)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from workbench.store.core import SliceRows, StoreCore


class LensTables(StoreCore):
    """Queries of the lens tables (the Feature browser's value vectors, Neurons, Concept vectors)."""

    # -- value vectors --------------------------------------------------------------------------
    def neurons_with_token(
        self, model_id: str, token: str, layer: int | None = None, side: str = "top",
        lens: str = "gain_aware", limit: int = 200,
    ) -> pd.DataFrame:
        """Value vectors whose top (or bottom) tokens contain `token` exactly (e.g. ' Paris')."""
        sql = ("SELECT layer, neuron, rank, logit FROM value_vector_tokens WHERE model_id = ? "
               "AND lens = ? AND side = ? AND token = ?")
        params: list[Any] = [model_id, lens, side, token]
        if layer is not None:
            sql += " AND layer = ?"
            params.append(layer)
        sql += " ORDER BY rank, logit DESC LIMIT ?"
        params.append(limit)
        return self.df(sql, params)

    def neurons_matching(
        self, model_id: str, text: str, layer: int | None = None, lens: str = "gain_aware",
        limit: int = 100,
    ) -> pd.DataFrame:
        """Value vectors whose top/bottom tokens contain `text` as a case-insensitive substring.

        Exact token matches (' Paris' for "paris", ignoring case and surrounding space) rank
        above substrings (' Parish'); then by how many tokens match and how high. Column
        `exact` counts the exact matches."""
        word = text.strip()
        sql = ("SELECT layer, neuron, side, count(*) AS hits, "
               "count(*) FILTER (WHERE lower(trim(token)) = lower(?)) AS exact, "
               "min(rank) AS best_rank, list(token ORDER BY rank) AS matched FROM value_vector_tokens "
               "WHERE model_id = ? AND lens = ? AND token ILIKE ?")
        params: list[Any] = [word, model_id, lens, f"%{word}%"]
        if layer is not None:
            sql += " AND layer = ?"
            params.append(layer)
        sql += " GROUP BY layer, neuron, side ORDER BY exact > 0 DESC, hits DESC, best_rank LIMIT ?"
        params.append(limit)
        return self.df(sql, params)

    def value_vector_tokens(
        self, model_id: str, layer: int, neuron: int, lens: str = "gain_aware"
    ) -> pd.DataFrame:
        return self.df(
            "SELECT side, rank, token_id, token, logit FROM value_vector_tokens WHERE model_id = ? "
            "AND lens = ? AND layer = ? AND neuron = ? ORDER BY side DESC, rank",
            [model_id, lens, layer, neuron],
        )

    def value_vectors(self, model_id: str, layer: int, lens: str = "gain_aware") -> pd.DataFrame:
        return self.df(
            "SELECT v.neuron, v.norm, v.gain_norm, v.logit_std, "
            "list(t.token ORDER BY t.rank) FILTER (WHERE t.side = 'top') AS top_tokens, "
            "list(t.token ORDER BY t.rank) FILTER (WHERE t.side = 'bottom') AS bottom_tokens "
            "FROM value_vectors v JOIN value_vector_tokens t USING (model_id, lens, layer, neuron) "
            "WHERE v.model_id = ? AND v.lens = ? AND v.layer = ? "
            "GROUP BY v.neuron, v.norm, v.gain_norm, v.logit_std ORDER BY v.neuron",
            [model_id, lens, layer],
        )

    # -- neuron statistics ----------------------------------------------------------------------
    def neuron_histogram(
        self, model_id: str, layer: int, neuron: int, corpus_id: str | None = None,
        site: str = "mlp.hook_pre",
    ) -> dict[str, Any]:
        """Histogram and summary of one neuron: {'edges', 'counts', 'mean', 'std', quantiles}."""
        sql = ("SELECT s.*, e.edges FROM neuron_stats s JOIN hist_edges e "
               "USING (model_id, corpus_id, site, layer) WHERE s.model_id = ? AND s.layer = ? "
               "AND s.neuron = ? AND s.site = ?")
        params: list[Any] = [model_id, layer, neuron, site]
        if corpus_id is not None:
            sql += " AND s.corpus_id = ?"
            params.append(corpus_id)
        frame = self.df(sql + " LIMIT 1", params)
        if frame.empty:
            raise KeyError(
                f"No statistics for neuron {neuron} of layer {layer} of {model_id}"
                + (f" on corpus {corpus_id}" if corpus_id else "")
                + ". Run `python -m workbench prepare` (or the Neurons page's build button)."
            )
        row = frame.iloc[0].to_dict()
        row["edges"] = np.asarray(row["edges"], dtype=float)
        row["counts"] = np.asarray(row["counts"], dtype=np.int64)
        return row

    def stat_corpora(self, model_id: str) -> list[str]:
        frame = self.df("SELECT DISTINCT corpus_id FROM hist_edges WHERE model_id = ? ORDER BY 1",
                        [model_id])
        return list(frame["corpus_id"])

    def neuron_stats(self, model_id: str, layer: int, corpus_id: str,
                     site: str = "mlp.hook_pre") -> pd.DataFrame:
        return self.df(
            "SELECT neuron, n, mean, std, q01, q05, q25, q50, q75, q95, q99 FROM neuron_stats "
            "WHERE model_id = ? AND layer = ? AND corpus_id = ? AND site = ? ORDER BY neuron",
            [model_id, layer, corpus_id, site],
        )

    # -- concept sets, contrast and vectors ---------------------------------------------------------
    def save_concept_set(self, concept_id: str, name: str, terms: list[str],
                         positive_titles: list[str], n_negative: int) -> None:
        with self.transaction() as cur:
            _insert_concept_set(cur, concept_id, name, terms, positive_titles, n_negative)

    def save_concept_build(self, model_id: str, concept_id: str, name: str, terms: list[str],
                           positive_titles: list[str], n_negative: int, slices: Sequence[SliceRows]) -> None:
        """A concept's set, its histogram slices and its analyses in ONE transaction; the last of
        `slices` (build_concept passes the concept's own 'all' slice) is marked built last, so a
        concept is never marked built without its histograms."""
        self.write_slice_group(model_id, slices, first=lambda cur: _insert_concept_set(
            cur, concept_id, name, terms, positive_titles, n_negative))

    def concept_sets(self) -> pd.DataFrame:
        return self.df("SELECT concept_id, name, terms_json, positive_titles_json, n_negative, "
                       "created_at FROM concept_sets ORDER BY created_at")

    def built_concepts(self, model_id: str) -> dict[str, str]:
        """concept_id -> name of the concept sets whose analyses are built for this model, oldest
        first (what the Concept vectors and Neurons pages offer to pick)."""
        rows = self.cur.execute(
            "SELECT c.concept_id, c.name FROM concept_sets c JOIN builds b ON b.model_id = ? "
            "AND b.artefact = 'concept:' || c.concept_id AND b.part = 'all' ORDER BY c.created_at",
            [model_id]).fetchall()
        return {str(cid): str(name) for cid, name in rows}

    def top_contrast_neurons(
        self, model_id: str, concept_id: str, layer: int | None = None, limit: int = 50,
        site: str = "mlp.hook_pre",
    ) -> pd.DataFrame:
        """Neurons ranked by |effect size| (concept vs neutral)."""
        sql = ("SELECT layer, neuron, mean_pos, mean_neg, std_pos, std_neg, diff, effect_size "
               "FROM neuron_contrast WHERE model_id = ? AND concept_id = ? AND site = ?")
        params: list[Any] = [model_id, concept_id, site]
        if layer is not None:
            sql += " AND layer = ?"
            params.append(layer)
        sql += " ORDER BY abs(effect_size) DESC LIMIT ?"
        params.append(limit)
        return self.df(sql, params)

    def concept_vectors(self, model_id: str, concept_id: str, site: str | None = None) -> pd.DataFrame:
        sql = ("SELECT site, layer, norm, auroc, top_tokens, bottom_tokens, vector FROM concept_vectors "
               "WHERE model_id = ? AND concept_id = ?")
        params: list[Any] = [model_id, concept_id]
        if site is not None:
            sql += " AND site = ?"
            params.append(site)
        return self.df(sql + " ORDER BY site, layer", params)

    def hist_edges(self, model_id: str, corpus_id: str, site: str) -> pd.DataFrame:
        """Histogram bin edges per layer of one statistics build (layer, edges)."""
        return self.df("SELECT layer, edges FROM hist_edges WHERE model_id = ? AND corpus_id = ? AND site = ?",
                       [model_id, corpus_id, site])


def _insert_concept_set(cur: Any, concept_id: str, name: str, terms: list[str], positive_titles: list[str],
                        n_negative: int) -> None:
    cur.execute(
        "INSERT OR REPLACE INTO concept_sets (concept_id, name, terms_json, "
        "positive_titles_json, n_negative) VALUES (?, ?, ?, ?, ?)",
        [concept_id, name, json.dumps(terms), json.dumps(positive_titles), n_negative],
    )
