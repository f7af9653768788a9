"""Gemma Scope 2 for the embedded model, offline, in the exact cache layout SAELens's registry
names (release gemma-scope-2-270m-pt-mlp-all, id layer_6_width_16k_l0_small): a random 16k-wide
JumpReLU SAE on the real Gemma 3 270M goes through catalogue -> search -> remove (PISCES) ->
preview -> a spec bound to its hash -> re-apply."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from workbench.adapters import use
from workbench.config import Settings
from workbench.edits import EditSpec, compile_spec, load_spec, save_spec
from workbench.generate import SamplingParams, generate_pair
from workbench.models import ModelBundle
from workbench.models.hashing import sae_sha256
from workbench.sae.catalogue import tau_rows
from workbench.sae.index import catalogue_into_store
from workbench.sae.sources import load_sae, spec_sae_loader
from workbench.sae.tiny import write_gemma_scope_2
from workbench.store import open_store

pytestmark = pytest.mark.integration

REF = "pretrained:gemma-scope-2-270m-pt-mlp-all/layer_6_width_16k_l0_small"


def test_gemma_scope_2_layer_6_end_to_end(embedded_bundle: ModelBundle, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "hf-hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    write_gemma_scope_2(cache, "mlp_out_all/layer_6_width_16k_l0_small", embedded_bundle.d_model, 16384,
                        threshold=0.5)
    sae, sae_id, digest = load_sae(REF, tmp_path)
    assert int(sae.cfg.d_sae) == 16384 and sae.cfg.metadata.hook_name == "blocks.6.hook_mlp_out"
    settings = Settings(cache_dir=tmp_path)
    store = open_store(settings.store_path)
    try:
        cat = catalogue_into_store(store, embedded_bundle, sae, sae_id, digest, REF, None, max_tokens=600)
        assert cat.d_sae == 16384 and cat.n_tokens >= 600
        row = store.list_saes().iloc[-1]
        assert row["path"] == REF and row["source"] == "pretrained"
        detail = store.feature_detail(sae_id, 7)
        word = next(t for t in detail["tokens"]["token"] if t.strip()).strip()
        assert 7 in set(store.search_features(sae_id, word, limit=200)["feature"])
    finally:
        store.close()
    rows = tau_rows(embedded_bundle.hf_model, sae, 7, 0.6)
    assert len(rows) >= 1
    spec = EditSpec.from_dict({
        "name": "gemma-scope-2", "model": {"id": embedded_bundle.model_id,
                                           "weights_sha256": embedded_bundle.weights_sha256},
        "sae": {"id": sae_id, "sha256": sae_sha256(sae)},
        "operations": [{"kind": "remove_sae_features", "layer": 6, "features": [7], "tau": 0.6, "mu": 64.0,
                        "signed": False}]})
    adapter = compile_spec(spec, embedded_bundle, sae_loader=spec_sae_loader(settings.saes_dir))
    assert sorted({c.neuron for c in adapter.rows}) == sorted(rows["neuron"].tolist())
    params = SamplingParams(max_new_tokens=6)
    base, edited = generate_pair(embedded_bundle, "The Eiffel Tower is in", adapter, params)
    assert base.text and edited.text
    path = tmp_path / "gs2.json"
    save_spec(spec, path)
    again = compile_spec(load_spec(path)[0], embedded_bundle, sae_loader=spec_sae_loader(settings.saes_dir))
    ids = embedded_bundle.tokenizer("The Eiffel Tower is in", return_tensors="pt").input_ids
    with torch.no_grad():
        with use(embedded_bundle, adapter):
            first = embedded_bundle.hf_model(ids).logits
        with use(embedded_bundle, again):
            second = embedded_bundle.hf_model(ids).logits
        plain = embedded_bundle.hf_model(ids).logits
    assert torch.equal(first, second) and not torch.allclose(first, plain, atol=1e-4)
