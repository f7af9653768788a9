"""The store's schema: one ordered list of migrations. Migration i takes the schema from
version i to i+1; append a new one, never edit a released one."""

from __future__ import annotations

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
    """,
    # 2 -> 3: who saved an edit (a server user's owner id, workbench/ui/identity.py)
    """
    ALTER TABLE edits ADD COLUMN owner VARCHAR
    """,
    # 3 -> 4: the lab's shared edit library (workbench/edits/library.py); the payload lives in
    # <cache>/library/<entry_id>.safetensors, the rest here
    """
    CREATE TABLE library (
        entry_id VARCHAR PRIMARY KEY, model_id VARCHAR, weights_sha256 VARCHAR, name VARCHAR,
        author VARCHAR, note VARCHAR, spec_sha256 VARCHAR, spec_json VARCHAR, operations_json VARCHAR,
        payload_file VARCHAR, payload_sha256 VARCHAR, payload_bytes BIGINT, concept VARCHAR,
        tier VARCHAR, score DOUBLE, outcome VARCHAR, metrics_json VARCHAR, verdicts_json VARCHAR,
        published_at TIMESTAMP DEFAULT current_timestamp)
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
