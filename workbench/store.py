"""DuckDB store (cache/workbench.duckdb): schema, migrations, writes and the queries the UI needs.

This is the only module that writes SQL. Every build writes one slice (e.g. the vocab
projection of one layer) in one transaction that first deletes the old slice and then inserts
the new one and marks the slice complete in `builds`. An interrupted build therefore leaves the
old complete slice or the new complete slice, never half of one, and a rerun skips the slices
that `builds` marks complete.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

SCHEMA_VERSION = 1

# Each migration takes the schema from version i to i+1; append, never edit a released one.
MIGRATIONS: list[str] = [
    # 0 -> 1: foundation tables
    """
    CREATE TABLE models (
        model_id VARCHAR PRIMARY KEY, source VARCHAR, path VARCHAR, weights_sha256 VARCHAR,
        config_json VARCHAR, n_layers INTEGER, d_model INTEGER, d_mlp INTEGER,
        added_at TIMESTAMP DEFAULT current_timestamp);
    CREATE TABLE builds (
        model_id VARCHAR, artefact VARCHAR, part VARCHAR, params_json VARCHAR,
        seconds DOUBLE, finished_at TIMESTAMP DEFAULT current_timestamp,
        PRIMARY KEY (model_id, artefact, part));
    CREATE TABLE value_vectors (
        model_id VARCHAR, lens VARCHAR, layer INTEGER, neuron INTEGER,
        norm REAL, gain_norm REAL, logit_mean REAL, logit_std REAL);
    CREATE TABLE value_vector_tokens (
        model_id VARCHAR, lens VARCHAR, layer INTEGER, neuron INTEGER, side VARCHAR,
        rank SMALLINT, token_id INTEGER, token VARCHAR, logit REAL);
    CREATE TABLE hist_edges (
        model_id VARCHAR, corpus_id VARCHAR, site VARCHAR, layer INTEGER, edges DOUBLE[],
        PRIMARY KEY (model_id, corpus_id, site, layer));
    CREATE TABLE neuron_stats (
        model_id VARCHAR, corpus_id VARCHAR, site VARCHAR, layer INTEGER, neuron INTEGER,
        n BIGINT, mean DOUBLE, std DOUBLE, q01 DOUBLE, q05 DOUBLE, q25 DOUBLE, q50 DOUBLE,
        q75 DOUBLE, q95 DOUBLE, q99 DOUBLE, counts INTEGER[]);
    CREATE TABLE concept_sets (
        concept_id VARCHAR PRIMARY KEY, name VARCHAR, terms_json VARCHAR,
        positive_titles_json VARCHAR, n_negative INTEGER,
        created_at TIMESTAMP DEFAULT current_timestamp);
    CREATE TABLE neuron_contrast (
        model_id VARCHAR, concept_id VARCHAR, site VARCHAR, layer INTEGER, neuron INTEGER,
        mean_pos DOUBLE, mean_neg DOUBLE, std_pos DOUBLE, std_neg DOUBLE, diff DOUBLE,
        effect_size DOUBLE);
    CREATE TABLE concept_vectors (
        model_id VARCHAR, concept_id VARCHAR, site VARCHAR, layer INTEGER, vector REAL[],
        norm DOUBLE, auroc DOUBLE, top_tokens VARCHAR[], bottom_tokens VARCHAR[]);
    CREATE TABLE edits (
        edit_id VARCHAR PRIMARY KEY, model_id VARCHAR, name VARCHAR, spec_json VARCHAR,
        metrics_json VARCHAR, created_at TIMESTAMP DEFAULT current_timestamp);
    CREATE INDEX vvt_token ON value_vector_tokens (model_id, token);
    CREATE INDEX ns_neuron ON neuron_stats (model_id, layer, neuron);
    """,
]


class StoreBusyError(RuntimeError):
    """Another process holds the DuckDB file (DuckDB allows one writing process)."""


@dataclass(frozen=True)
class Slice:
    """One unit of a build: rows of `table` matching `key`, replaced as a whole."""

    table: str
    key: dict[str, Any]


class Store:
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
        where = " AND ".join(f"{k} = ?" for k in key)
        with self.transaction() as cur:
            for table, frame in frames.items():
                cur.execute(f"DELETE FROM {table} WHERE {where}", list(key.values()))
                if len(frame):
                    cur.register("incoming", frame)
                    cols = ", ".join(frame.columns)
                    cur.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM incoming")
                    cur.unregister("incoming")
            cur.execute(
                "INSERT OR REPLACE INTO builds (model_id, artefact, part, params_json, seconds, "
                "finished_at) VALUES (?, ?, ?, ?, ?, current_timestamp)",
                [model_id, artefact, part, json.dumps(params or {}), seconds],
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
            cur.execute(
                "INSERT OR REPLACE INTO concept_sets (concept_id, name, terms_json, "
                "positive_titles_json, n_negative) VALUES (?, ?, ?, ?, ?)",
                [concept_id, name, json.dumps(terms), json.dumps(positive_titles), n_negative],
            )

    def concept_sets(self) -> pd.DataFrame:
        return self.df("SELECT concept_id, name, terms_json, positive_titles_json, n_negative, "
                       "created_at FROM concept_sets ORDER BY created_at")

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

    # -- status -----------------------------------------------------------------------------------
    def table_counts(self) -> dict[str, int]:
        tables = self.df("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
                         "ORDER BY 1")["table_name"]
        counts = {}
        for t in tables:
            row = self.cur.execute(f"SELECT count(*) FROM {t}").fetchone()
            counts[str(t)] = int(row[0]) if row else 0
        return counts


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


# =============================================================================================
# SAE catalogue (issue 4): tables saes, features, feature_tokens, feature_examples,
# row_feature_scores, feature_contrast, and their queries. Migration 1 -> 2 is appended to
# MIGRATIONS; one SAE's catalogue is replaced in a single transaction.
# =============================================================================================
MIGRATIONS.append(
    # 1 -> 2: SAE catalogue
    """
    CREATE TABLE saes (
        sae_id VARCHAR PRIMARY KEY, model_id VARCHAR, hook VARCHAR, layer INTEGER,
        d_sae INTEGER, k DOUBLE, architecture VARCHAR, source VARCHAR, trained_on VARCHAR,
        metrics_json VARCHAR, path VARCHAR, sha256 VARCHAR, lens VARCHAR, corpus_id VARCHAR,
        n_tokens BIGINT, seconds DOUBLE, built_at TIMESTAMP DEFAULT current_timestamp);
    CREATE TABLE features (
        sae_id VARCHAR, feature INTEGER, density REAL, max_act REAL, mean_act REAL,
        label VARCHAR, auto_label VARCHAR, top_tokens VARCHAR[], bottom_tokens VARCHAR[],
        search_text VARCHAR, PRIMARY KEY (sae_id, feature));
    CREATE TABLE feature_tokens (
        sae_id VARCHAR, feature INTEGER, side VARCHAR, rank SMALLINT, token_id INTEGER,
        token VARCHAR, token_norm VARCHAR, logit REAL);
    CREATE TABLE feature_examples (
        sae_id VARCHAR, feature INTEGER, rank SMALLINT, doc_id INTEGER, title VARCHAR,
        topic VARCHAR, token_pos INTEGER, token VARCHAR, activation REAL, snippet VARCHAR);
    CREATE TABLE row_feature_scores (
        sae_id VARCHAR, layer INTEGER, neuron INTEGER, feature INTEGER, score REAL,
        row_rank SMALLINT, feature_rank SMALLINT);
    CREATE TABLE feature_contrast (
        sae_id VARCHAR, concept_id VARCHAR, feature INTEGER, mean_pos REAL, mean_neg REAL,
        freq_pos REAL, freq_neg REAL, diff REAL);
    CREATE INDEX ft_token ON feature_tokens (token_norm);
    CREATE INDEX fe_feature ON feature_examples (sae_id, feature);
    CREATE INDEX rfs_row ON row_feature_scores (sae_id, neuron);
    CREATE INDEX rfs_feature ON row_feature_scores (sae_id, feature);
    CREATE INDEX fc_concept ON feature_contrast (sae_id, concept_id)
    """
)
SCHEMA_VERSION = len(MIGRATIONS)
SAE_TABLES = ("features", "feature_tokens", "feature_examples", "row_feature_scores", "feature_contrast")


def _norm_token(token: str) -> str:
    return token.strip().lower()


def save_sae_catalogue(
    store: Store,
    sae_row: dict[str, Any],
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
    with store.transaction() as cur:
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
        cur.execute(f"INSERT OR REPLACE INTO saes ({', '.join(cols)}, built_at) VALUES "
                    f"({', '.join('?' for _ in cols)}, current_timestamp)", [sae_row.get(c) for c in cols])


def save_feature_contrast(store: Store, sae_id: str, concept_id: str, contrast: pd.DataFrame) -> None:
    frame = contrast[["feature", "mean_pos", "mean_neg", "freq_pos", "freq_neg", "diff"]].copy()
    frame["sae_id"] = sae_id
    frame["concept_id"] = concept_id
    with store.transaction() as cur:
        cur.execute("DELETE FROM feature_contrast WHERE sae_id = ? AND concept_id = ?", [sae_id, concept_id])
        cur.register("incoming", frame)
        names = ", ".join(frame.columns)
        cur.execute(f"INSERT INTO feature_contrast ({names}) SELECT {names} FROM incoming")
        cur.unregister("incoming")


def list_saes(store: Store, model_id: str | None = None) -> pd.DataFrame:
    sql = ("SELECT sae_id, model_id, hook, layer, d_sae, k, architecture, source, metrics_json, "
           "sha256, path, corpus_id, n_tokens, built_at FROM saes")
    if model_id is None:
        return store.df(sql + " ORDER BY built_at")
    return store.df(sql + " WHERE model_id = ? ORDER BY built_at", [model_id])


def search_features(store: Store, sae_id: str, text: str, limit: int = 50) -> pd.DataFrame:
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
    return store.cur.execute(
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


def feature_labels(store: Store, sae_id: str, features: list[int]) -> dict[int, str]:
    """{feature: label} for the given features of an SAE (missing ones left out)."""
    if not features:
        return {}
    frame = store.df("SELECT feature, label FROM features WHERE sae_id = ? AND list_contains(?, feature)",
                     [sae_id, features])
    return {int(f): str(label) for f, label in zip(frame["feature"], frame["label"], strict=True)}


def feature_densities(store: Store, sae_id: str) -> pd.DataFrame:
    """feature, density of every catalogued feature of an SAE (for the density histogram)."""
    return store.df("SELECT feature, density FROM features WHERE sae_id = ? ORDER BY feature", [sae_id])


def feature_detail(store: Store, sae_id: str, feature: int) -> dict[str, Any]:
    """One feature: its row of `features`, its tokens and its examples."""
    row = store.df("SELECT * FROM features WHERE sae_id = ? AND feature = ?", [sae_id, feature])
    if row.empty:
        raise KeyError(f"SAE {sae_id!r} has no catalogued feature {feature}.")
    return {
        **row.iloc[0].to_dict(),
        "tokens": store.df("SELECT side, rank, token_id, token, logit FROM feature_tokens WHERE "
                           "sae_id = ? AND feature = ? ORDER BY side DESC, rank", [sae_id, feature]),
        "examples": store.df("SELECT rank, doc_id, title, topic, token_pos, token, activation, snippet "
                             "FROM feature_examples WHERE sae_id = ? AND feature = ? ORDER BY rank",
                             [sae_id, feature]),
    }


def features_of_row(store: Store, sae_id: str, neuron: int, limit: int = 16) -> pd.DataFrame:
    """Features with the largest |s[i, f]| for W_out row `neuron` (stored top scores)."""
    return store.df(
        "SELECT r.feature, r.score, r.row_rank, f.label, f.top_tokens FROM row_feature_scores r "
        "JOIN features f USING (sae_id, feature) WHERE r.sae_id = ? AND r.neuron = ? "
        "AND r.row_rank >= 0 ORDER BY abs(r.score) DESC LIMIT ?", [sae_id, neuron, limit])


def rows_of_feature(store: Store, sae_id: str, feature: int, limit: int = 16) -> pd.DataFrame:
    """W_out rows with the largest |s[i, f]| for `feature` (stored top scores)."""
    return store.df(
        "SELECT neuron, score, feature_rank FROM row_feature_scores WHERE sae_id = ? AND feature = ? "
        "AND feature_rank >= 0 ORDER BY abs(score) DESC LIMIT ?", [sae_id, feature, limit])


def features_by_contrast(store: Store, sae_id: str, concept_id: str, limit: int = 50) -> pd.DataFrame:
    """Features ranked by mean activation on the concept's documents minus neutral ones."""
    return store.df(
        "SELECT c.feature, c.mean_pos, c.mean_neg, c.freq_pos, c.freq_neg, c.diff, f.label, "
        "f.top_tokens FROM feature_contrast c JOIN features f USING (sae_id, feature) "
        "WHERE c.sae_id = ? AND c.concept_id = ? ORDER BY c.diff DESC LIMIT ?",
        [sae_id, concept_id, limit])


def set_feature_label(store: Store, sae_id: str, feature: int, label: str) -> None:
    label = label.strip()
    if not label:
        raise ValueError("A feature label cannot be empty.")
    with store.transaction() as cur:
        n = cur.execute("SELECT count(*) FROM features WHERE sae_id = ? AND feature = ?",
                        [sae_id, feature]).fetchone()
        if not n or not n[0]:
            raise KeyError(f"SAE {sae_id!r} has no catalogued feature {feature}.")
        cur.execute("UPDATE features SET label = ?, search_text = lower(? || ' | ' || "
                    "array_to_string(top_tokens, ' ')) WHERE sae_id = ? AND feature = ?",
                    [label, label, sae_id, feature])
