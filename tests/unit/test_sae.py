"""SAE training, sources, catalogue, row scores and store on the tiny model (seconds).

The tiny SAE goes through exactly the training path of the real one (activations of the bundle's
TransformerBridge collected once, SAELens's SAETrainer, BatchTopK, saved folder, held-out metrics)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.config import Settings
from workbench.corpus.wiki import load_wiki
from workbench.lenses.tokens import clean_token_mask
from workbench.models import layout
from workbench.sae.catalogue import (
    SAESite,
    build_catalogue,
    decoder_directions,
    feature_contrast,
    row_feature_matrix,
    row_feature_scores,
    tau_rows,
)
from workbench.sae.sources import SAELoadError, check_sae_folder, load_local_sae
from workbench.sae.train import SAETrainConfig, collect_activations, train_sae

TINY_CFG = SAETrainConfig(
    layer=1, site="hook_mlp_out", width=128, k=6, tokens=12_288, context_size=32, train_batch_tokens=512,
    store_batch_prompts=8, norm_batches=2, holdout_docs=40, eval_tokens=1500, lr=2e-3,
    dead_feature_window=8,
)


@pytest.fixture(scope="module")
def sae_settings(tmp_path_factory: pytest.TempPathFactory, session_settings: Settings) -> Settings:
    cache = tmp_path_factory.mktemp("sae-cache")
    (cache / "models").symlink_to(session_settings.models_dir.resolve(), target_is_directory=True)
    return Settings(cache_dir=cache)


@pytest.fixture(scope="module")
def docs() -> list:
    return load_wiki("en").sample(400, seed=3)


@pytest.fixture(scope="module")
def trained(tiny_bundle, sae_settings, docs):  # type: ignore[no-untyped-def]
    return train_sae(tiny_bundle, TINY_CFG, sae_settings, texts=[d.text for d in docs])


@pytest.fixture(scope="module")
def catalogue(tiny_bundle, trained, docs):  # type: ignore[no-untyped-def]
    return build_catalogue(tiny_bundle, trained.sae, trained.sae_id, docs[:60], max_tokens=2000,
                           n_examples=4, k_tokens=10, context_size=32)


# -- training ------------------------------------------------------------------------------------
def test_training_loss_falls_and_folder_is_saelens_format(trained) -> None:  # type: ignore[no-untyped-def]
    losses = trained.metrics.losses
    assert len(losses) == TINY_CFG.tokens // TINY_CFG.train_batch_tokens
    assert np.mean(losses[-4:]) < 0.9 * np.mean(losses[:2])
    names = {p.name for p in trained.path.iterdir()}
    assert {"sae_weights.safetensors", "cfg.json", "workbench_metrics.json"} <= names
    assert not trained.path.with_name(trained.path.name + ".partial").exists()
    m = trained.metrics
    assert 0.0 < m.explained_variance <= 1.0 and m.l0 > 0 and 0.0 <= m.dead_fraction <= 1.0
    assert trained.sae.cfg.metadata.hook_name == "blocks.1.hook_mlp_out"
    assert trained.sae.cfg.d_sae == TINY_CFG.width


def test_training_runs_once_per_config(tiny_bundle, trained, sae_settings) -> None:  # type: ignore[no-untyped-def]
    again = train_sae(tiny_bundle, TINY_CFG, sae_settings, texts=["unused"])
    assert again.sae_id == trained.sae_id and again.sha256 == trained.sha256
    assert again.trained_state is None  # loaded, not retrained
    other = replace(TINY_CFG, k=7)
    assert other.sae_id(tiny_bundle.model_id, tiny_bundle.weights_sha256) != trained.sae_id


def test_saved_folder_matches_trained_weights(trained) -> None:  # type: ignore[no-untyped-def]
    loaded = trained.sae.state_dict()
    for name, tensor in trained.trained_state.items():
        assert torch.equal(loaded[name], tensor), name


def test_config_round_trip_and_errors() -> None:
    cfg = SAETrainConfig(layer=3, width=512, k=16)
    assert SAETrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="Unknown SAE training options"):
        SAETrainConfig.from_dict({"widht": 3})
    with pytest.raises(ValueError, match="site"):
        SAETrainConfig(site="hook_resid_post")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k <= width"):
        SAETrainConfig(width=8, k=16)


# -- sources -------------------------------------------------------------------------------------
def test_load_local_returns_sae_id_and_hash(trained) -> None:  # type: ignore[no-untyped-def]
    sae, sae_id, digest = load_local_sae(trained.path)
    assert sae_id == trained.sae_id and len(digest) == 64 and digest == trained.sha256
    # one definition of an SAE's hash: the loader's, the spec's and the page's agree
    from workbench.edits.spec import sae_sha256

    assert digest == sae_sha256(sae) == sae_sha256(trained.sae)


def test_missing_and_corrupt_folders_give_clear_errors(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SAELoadError, match="does not exist"):
        load_local_sae(tmp_path / "nope")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "sae_weights.pt").write_bytes(b"\x80\x04pickle")
    with pytest.raises(SAELoadError, match="pickled weights"):
        check_sae_folder(bad)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "cfg.json").write_text((trained.path / "cfg.json").read_text())
    (broken / "sae_weights.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(SAELoadError, match="corrupt"):
        load_local_sae(broken)
    (broken / "cfg.json").write_text("{")
    with pytest.raises(SAELoadError, match="not valid JSON"):
        load_local_sae(broken)


# -- catalogue ------------------------------------------------------------------------------------
def test_catalogue_has_one_row_per_feature(catalogue, trained) -> None:  # type: ignore[no-untyped-def]
    assert len(catalogue.features) == trained.sae.cfg.d_sae
    assert list(catalogue.features["feature"]) == list(range(trained.sae.cfg.d_sae))
    assert len(catalogue.tokens) == trained.sae.cfg.d_sae * 2 * 10
    assert catalogue.features["label"].str.len().min() > 0
    ex = catalogue.examples
    assert (ex["activation"] > 0).all()
    assert ex["snippet"].str.contains(r"\[\[", regex=True).all()
    assert not ex.duplicated(["feature", "doc_id"]).any()  # one example per document


def test_catalogue_stats_match_brute_force(tiny_bundle, trained, catalogue, docs) -> None:  # type: ignore[no-untyped-def]
    sae = trained.sae
    acts = collect_activations(tiny_bundle, sae.cfg.metadata.hook_name, [d.text for d in docs[:60]],
                               max_tokens=catalogue.n_tokens, context_size=32)
    assert acts.shape[0] == catalogue.n_tokens
    with torch.no_grad():
        feats = sae.encode(acts)
    density = (feats > 0).float().mean(0).numpy()
    np.testing.assert_allclose(catalogue.features["density"], density, atol=1e-6)
    np.testing.assert_allclose(catalogue.features["max_act"], feats.max(0).values.numpy(), rtol=1e-4, atol=1e-5)
    # the best example of a live feature is its global maximum
    live = catalogue.features.query("density > 0")["feature"].tolist()[:5]
    for f in live:
        best = catalogue.examples.query("feature == @f and rank == 0")["activation"].item()
        assert best == pytest.approx(float(feats[:, f].max()), rel=1e-4)


def test_vocab_projection_matches_direct_product(tiny_bundle, trained, catalogue) -> None:  # type: ignore[no-untyped-def]
    hf = tiny_bundle.hf_model
    site = SAESite.of_sae(trained.sae)
    z = trained.sae.W_dec.detach().float() * layout.final_gain(hf)  # post-norm site: z = d_f
    assert torch.allclose(decoder_directions(hf, trained.sae, site), z)
    logits = z @ layout.unembed(hf).float()
    mask = clean_token_mask(tiny_bundle.tokenizer, tiny_bundle.vocab_size)
    logits[:, ~mask] = -torch.inf
    for f in (0, 5, 77):
        top = logits[f].topk(10)
        got = catalogue.tokens.query("feature == @f and side == 'top'").sort_values("rank")
        assert got["token_id"].tolist() == top.indices.tolist()
        np.testing.assert_allclose(got["logit"], top.values.numpy(), rtol=1e-5)


def test_row_scores_match_direct_computation(tiny_bundle, trained) -> None:  # type: ignore[no-untyped-def]
    hf, sae = tiny_bundle.hf_model, trained.sae
    v = layout.w_out(hf, 1).detach().float()
    v_tilde = v * layout.post_ffn_gain(hf, 1)
    e = sae.W_enc.detach().float()
    s = row_feature_matrix(hf, sae)
    assert s.shape == (tiny_bundle.d_mlp, sae.cfg.d_sae)
    for i, f in [(0, 0), (17, 40), (127, 127)]:
        assert float(s[i, f]) == pytest.approx(float(v_tilde[i] @ e[:, f]), rel=1e-5, abs=1e-6)
    ref = row_feature_matrix(hf, sae, lens="reference")
    assert float(ref[3, 9]) == pytest.approx(float(v[3] @ e[:, 9]), rel=1e-5, abs=1e-6)
    frame = row_feature_scores(hf, sae, top_per_row=4, top_per_feature=4)
    row3 = frame.query("neuron == 3 and row_rank >= 0").sort_values("row_rank")
    assert row3["feature"].tolist() == s[3].abs().topk(4).indices.tolist()
    col9 = frame.query("feature == 9 and feature_rank >= 0").sort_values("feature_rank")
    assert col9["neuron"].tolist() == s[:, 9].abs().topk(4).indices.tolist()
    for tau in (0.0, 0.5, 0.9):
        rows = tau_rows(hf, sae, 9, tau)
        a = s[:, 9].abs()
        assert set(rows["neuron"]) == set((a > tau * a.max()).nonzero().flatten().tolist())
    with pytest.raises(ValueError, match="out of range"):
        tau_rows(hf, sae, 10_000, 0.5)


def test_feature_contrast_orders_by_difference(tiny_bundle, trained) -> None:  # type: ignore[no-untyped-def]
    from workbench.corpus.concept import build_concept_set

    concept = build_concept_set(load_wiki("en"), "Paris", n_positive=6, n_negative=6)
    frame = feature_contrast(tiny_bundle, trained.sae, concept, max_tokens=600, context_size=32)
    assert len(frame) == trained.sae.cfg.d_sae
    assert frame["diff"].is_monotonic_decreasing
    np.testing.assert_allclose(frame["diff"], frame["mean_pos"] - frame["mean_neg"], atol=1e-6)


# -- store ------------------------------------------------------------------------------------------
def _sae_row(trained, catalogue) -> dict:  # type: ignore[no-untyped-def]
    return {"sae_id": trained.sae_id, "model_id": "tiny", "hook": catalogue.hook_name, "layer": 1,
            "d_sae": catalogue.d_sae, "k": 6.0, "architecture": "jumprelu", "source": "local",
            "trained_on": "wiki-en", "metrics_json": "{}", "path": str(trained.path),
            "sha256": trained.sha256, "lens": "gain_aware", "corpus_id": "wiki-en",
            "n_tokens": catalogue.n_tokens, "seconds": 1.0}


def test_store_search_finds_planted_feature_and_row_queries(tmp_path, tiny_bundle, trained, catalogue) -> None:  # type: ignore[no-untyped-def]
    from workbench.store import Store

    tokens = catalogue.tokens.copy()
    planted = (tokens["feature"] == 42) & (tokens["side"] == "top") & (tokens["rank"] == 0)
    tokens.loc[planted, "token"] = " Zorblax"
    scores = row_feature_scores(tiny_bundle.hf_model, trained.sae, top_per_row=4, top_per_feature=4)
    store = Store(tmp_path / "w.duckdb")
    store.save_sae_catalogue(_sae_row(trained, catalogue), catalogue.features, tokens,
                       catalogue.examples, scores)
    hits = store.search_features(trained.sae_id, "zorblax")
    assert hits["feature"].iloc[0] == 42 and hits["match"].iloc[0] == "token"
    store.set_feature_label(trained.sae_id, 7, "Capital cities of Europe")
    assert 7 in set(store.search_features(trained.sae_id, "capital cit")["feature"])
    detail = store.feature_detail(trained.sae_id, 42)
    assert len(detail["tokens"]) == 20
    s = row_feature_matrix(tiny_bundle.hf_model, trained.sae)
    assert store.features_of_row(trained.sae_id, 3)["feature"].tolist() == s[3].abs().topk(4).indices.tolist()
    assert store.rows_of_feature(trained.sae_id, 9)["neuron"].tolist() == s[:, 9].abs().topk(4).indices.tolist()
    contrast = pd.DataFrame({"feature": np.arange(catalogue.d_sae), "mean_pos": 0.0, "mean_neg": 0.0,
                             "freq_pos": 0.0, "freq_neg": 0.0, "diff": np.arange(catalogue.d_sae) * 1.0})
    store.save_feature_contrast(trained.sae_id, "paris", contrast)
    assert store.features_by_contrast(trained.sae_id, "paris", limit=3)["feature"].tolist() == [127, 126, 125]
    # a rebuild keeps the user's label
    store.save_sae_catalogue(_sae_row(trained, catalogue), catalogue.features, tokens,
                       catalogue.examples, scores)
    assert store.feature_detail(trained.sae_id, 7)["label"] == "Capital cities of Europe"
    with pytest.raises(KeyError):
        store.set_feature_label(trained.sae_id, 99_999, "x")
    store.close()


def test_interrupted_catalogue_write_leaves_store_consistent(tmp_path, trained, catalogue) -> None:  # type: ignore[no-untyped-def]
    from workbench.store import Store

    store = Store(tmp_path / "w.duckdb")
    store.save_sae_catalogue(_sae_row(trained, catalogue), catalogue.features, catalogue.tokens,
                       catalogue.examples)
    before = store.table_counts()
    bad_scores = pd.DataFrame({"layer": [1], "neuron": ["not a number"], "feature": [0], "score": [1.0],
                               "row_rank": [0], "feature_rank": [0]})
    half = catalogue.features.head(10)  # would shrink the features table if it were committed
    with pytest.raises(Exception, match="(?i)conver|cast"):
        store.save_sae_catalogue(_sae_row(trained, catalogue), half, catalogue.tokens,
                           catalogue.examples, bad_scores)
    assert store.table_counts() == before
    store.close()


def test_sae_list_shows_local_folders_and_the_stores_catalogues(tmp_path, trained, catalogue, capsys) -> None:  # type: ignore[no-untyped-def]
    """`sae list` agrees with the store: a local folder (catalogued or not), a pretrained SAE the
    store has a catalogue of, and a catalogue whose folder is gone, each said to be what it is."""
    import shutil

    from workbench.cli import main
    from workbench.store import Store

    cache = tmp_path / "cache"
    shutil.copytree(trained.path, cache / "saes" / trained.sae_id)
    shutil.copytree(trained.path, cache / "saes" / "uncatalogued-sae")
    cli = ["--cache", str(cache), "sae", "list"]
    assert main(cli) == 0
    out = capsys.readouterr().out
    assert f"{trained.sae_id}  [local folder]" in out and "not catalogued" in out and "Catalogued in" not in out

    pretrained = "gemma-scope-2-270m-pt-mlp-all/layer_1_width_16k_l0_small"
    store = Store(cache / "workbench.duckdb")
    for sae_id, source, path in [(trained.sae_id, "local", str(cache / "saes" / trained.sae_id)),
                                 (pretrained, "pretrained", f"pretrained:{pretrained}"),
                                 ("deleted-sae", "local", str(tmp_path / "deleted-sae"))]:
        store.save_sae_catalogue({**_sae_row(trained, catalogue), "sae_id": sae_id, "source": source, "path": path},
                                 catalogue.features, catalogue.tokens, catalogue.examples)
    store.close()
    assert main(cli) == 0
    lines = capsys.readouterr().out.splitlines()
    line = {name: next((x for x in lines if x.strip().startswith(name + "  ")), "")
            for name in (trained.sae_id, "uncatalogued-sae", pretrained, "deleted-sae")}
    assert "[local folder]" in line[trained.sae_id] and line[trained.sae_id].endswith("  catalogued")
    assert "[local folder]" in line["uncatalogued-sae"] and line["uncatalogued-sae"].endswith("not catalogued")
    assert f"[pretrained]  load with pretrained:{pretrained}" in line[pretrained]
    assert "layer 1" in line[pretrained] and f"{catalogue.d_sae} features" in line[pretrained]
    assert "is gone" in line["deleted-sae"]
    assert sum(trained.sae_id in x for x in lines) == 1  # a catalogued local folder is listed once

    empty = tmp_path / "empty"
    assert main(["--cache", str(empty), "sae", "list"]) == 0
    assert "No SAEs under" in capsys.readouterr().out


# -- PISCES erase pipeline on the tiny SAE ----------------------------------------------------------
def test_pisces_retain_is_neighbours_and_neutral(tiny_bundle) -> None:  # type: ignore[no-untyped-def]
    """PISCES's 24 retain extracts are half same-topic neighbours and half neutral articles
    (retain_split), never an article that names the concept; tokenised to max_len tokens."""
    from workbench.methods.facts import FactSet
    from workbench.methods.pisces_search import RETAIN_TEXTS, retain_encoding, retain_texts
    from workbench.methods.retain import RetainConfig, retain_split

    corpus = load_wiki("en")
    facts = FactSet(concept="Paris", name="Paris", kind="place")
    cfg = RetainConfig()
    neighbours, neutral = retain_split(corpus, facts, cfg)
    assert len(neighbours) >= RETAIN_TEXTS // 2  # else neutral fills in (checked below)
    texts = retain_texts(corpus, facts, cfg)
    half = RETAIN_TEXTS // 2
    assert texts == [d.text[:400] for d in neighbours[:half] + neutral[:half]]
    topic = corpus.document_for("Paris").topic
    assert {d.topic for d in neighbours[:half]} == {topic} and any(d.topic != topic for d in neutral[:half])
    few = retain_texts(corpus, facts, replace(cfg, n_neighbours=3))
    assert len(few) == RETAIN_TEXTS and few[3:] == [d.text[:400] for d in retain_split(
        corpus, facts, replace(cfg, n_neighbours=3))[1][: RETAIN_TEXTS - 3]]
    enc = retain_encoding(tiny_bundle, corpus, facts)
    assert enc["input_ids"].shape[0] == RETAIN_TEXTS and enc["input_ids"].shape[1] <= cfg.max_len


def test_pisces_pipeline_gives_a_spec_that_compiles_and_reverts(tiny_bundle, trained, sae_settings) -> None:  # type: ignore[no-untyped-def]
    from workbench.adapters import use
    from workbench.edits.compile import compile_spec
    from workbench.methods.facts import Fact, FactSet, split_sentences
    from workbench.methods.pisces_search import pisces_erase
    from workbench.sae.sources import spec_sae_loader

    corpus = load_wiki("en")
    doc = corpus.get("Paris")
    facts = FactSet(concept=doc.title, name="Paris", kind="place",
                    facts=[Fact(s, "article") for s in split_sentences(doc.text)])
    # min_target_prob 0: the random tiny model gives every token a small probability; 6 candidates:
    # on this random model only the 5th and 6th by contrast lower the concept when removed
    try:
        result = pisces_erase(tiny_bundle, corpus, facts, sae_settings.saes_dir, layer=TINY_CFG.layer,
                              n_candidates=6, n_select=2, taus=(0.9, 0.5), mus=(8.0,), min_target_prob=0.0)
    except ValueError as err:  # no candidate lowers the concept on a random model: a clear sentence
        assert "No candidate feature" in str(err)
        pytest.skip("no candidate lowered the concept on the random tiny model")
    assert len(result.candidates) == 6 and len(result.grid) == 2
    # every candidate was removed alone and measured: a relative change of a probability, > -1 is possible
    assert all(math.isfinite(c.removal_effect) and c.removal_effect >= -1.0 for c in result.candidates)
    kept = [c for c in result.candidates if not c.dropped_by]
    selected = [c for c in result.candidates if c.selected]
    assert all(c.removal_effect >= 0 or c.act_concept <= 0 for c in result.candidates if c.dropped_by)
    assert all(c.removal_effect < 0 and c.act_concept > 0 for c in kept)
    # the selected ones are the n_select=2 kept candidates whose removal lowered the concept most
    assert len(selected) == min(2, len(kept)) and {c.feature for c in selected} <= {c.feature for c in kept}
    assert sorted(c.removal_effect for c in selected) == sorted(c.removal_effect for c in kept)[:len(selected)]
    op = result.spec.operations[0]
    assert op.kind == "remove_sae_features" and op.neuron_signs
    assert sorted(op.features) == sorted(c.feature for c in selected)
    adapter = compile_spec(result.spec, tiny_bundle, sae_loader=spec_sae_loader(sae_settings.saes_dir))
    before = {n: p.detach().clone() for n, p in tiny_bundle.hf_model.named_parameters() if "down_proj" in n}
    with use(tiny_bundle, adapter), torch.no_grad():
        tiny_bundle.hf_model(torch.tensor([[2, 3, 4]]))
    assert adapter.deltas and all(layer == op.layer for layer in adapter.deltas)
    after = {n: p.detach() for n, p in tiny_bundle.hf_model.named_parameters() if "down_proj" in n}
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_sae_feature_rows_feed_the_localized_optimisation(tiny_bundle, trained, sae_settings) -> None:  # type: ignore[no-untyped-def]
    """'pisces-rows': the rows come from the SAE (features by contrast, tau rule), only they change."""
    from dataclasses import replace

    from workbench.methods.erase import EraseOptions, PiscesConfig, erase
    from workbench.methods.optimise import OptimiseConfig
    from workbench.methods.pisces_search import FeatureCandidate
    from workbench.methods.retain import RetainConfig
    from workbench.sae.catalogue import tau_rows

    layer = TINY_CFG.layer
    cfg = OptimiseConfig(layers=(layer,), steps=2, min_target_prob=0.0, repr_layers=(layer,),
                         retain=RetainConfig(n_neutral=6, n_neighbours=2, n_collisions=2), eval_every=100, lr_scale=0.5)
    options = EraseOptions(optimise=replace(cfg, n_rows=12), saes_dir=sae_settings.saes_dir, score=False,
                           pisces=PiscesConfig(layer=layer, n_features=6, row_tau=0.5, min_target_prob=0.0))
    result = erase(tiny_bundle, load_wiki("en"), "Paris", "pisces-rows", options=options)
    features = [c for c in result.candidates if isinstance(c, FeatureCandidate)]
    chosen = [c.feature for c in features if c.selected]
    assert chosen and len(features) <= 6
    union: set[int] = set()
    for f in chosen:
        union |= {int(i) for i in tau_rows(tiny_bundle.hf_model, trained.sae, f, 0.5)["neuron"]}
    (target,) = result.spec.operations[0].targets
    assert target.layer == layer and 0 < len(target.rows) <= 12 and set(target.rows) <= union


def test_pisces_with_a_pre_norm_sae(tiny_bundle, trained, sae_settings) -> None:  # type: ignore[no-untyped-def]
    """site='mlp.hook_out' picks the pre-norm SAE (not the newer-or-older post-norm one) and its
    features are read at that hook; the spec's rows are the raw-row tau rule of that SAE."""
    from workbench.edits.compile import compile_spec
    from workbench.methods.facts import Fact, FactSet, split_sentences
    from workbench.methods.pisces_search import pisces_erase
    from workbench.sae.sources import spec_sae_loader

    raw = train_sae(tiny_bundle, replace(TINY_CFG, site="mlp.hook_out"), sae_settings,
                    texts=[d.text for d in load_wiki("en").sample(400, seed=3)])
    corpus = load_wiki("en")
    doc = corpus.get("Paris")
    facts = FactSet(concept=doc.title, name="Paris", kind="place",
                    facts=[Fact(s, "article") for s in split_sentences(doc.text)])
    try:
        result = pisces_erase(tiny_bundle, corpus, facts, sae_settings.saes_dir, layer=TINY_CFG.layer, n_candidates=4,
                              n_select=2, taus=(0.5,), mus=(8.0,), min_target_prob=0.0, site="mlp.hook_out")
    except ValueError as err:
        assert "No candidate feature" in str(err)
        pytest.skip("no candidate lowered the concept on the random tiny model")
    assert result.spec.sae.id == raw.sae_id and ".mlp_raw." in raw.sae_id
    op = result.spec.operations[0]
    adapter = compile_spec(result.spec, tiny_bundle, sae_loader=spec_sae_loader(sae_settings.saes_dir))
    rows = {int(i) for f in op.features for i in tau_rows(tiny_bundle.hf_model, raw.sae, f, op.tau)["neuron"]}
    assert {r.neuron for r in adapter.rows} <= rows
