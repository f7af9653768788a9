"""Pretrained SAEs and transcoders from the local Hugging Face cache, offline: files laid out
exactly as the hub cache holds Gemma Scope 2 (models--google--gemma-scope-2-270m-pt/refs/main,
snapshots/<rev>/<sae path from SAELens's registry>/{params.safetensors, config.json}), random
tensors sized for the tiny model. catalogue -> search -> remove (PISCES) -> preview -> a spec
bound to the SAE's hash -> re-apply, for an SAE on the MLP output and for a transcoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from workbench.adapters import merged_w_out, use
from workbench.cli import main
from workbench.config import Settings
from workbench.edits import EditSpec, SpecError, compile_spec, load_spec, save_spec
from workbench.models import ModelBundle, layout
from workbench.models.hashing import sae_sha256
from workbench.models.sites import SAESite
from workbench.ops.pisces import unit_rows
from workbench.sae.catalogue import tau_rows
from workbench.sae.sources import SAELoadError, load_sae, spec_sae_loader
from workbench.sae.tiny import write_gemma_scope_2
from workbench.store import open_store

SAE_REF = "pretrained:gemma-scope-2-270m-pt-mlp-all/layer_2_width_16k_l0_small"
TC_REF = "pretrained:gemma-scope-2-270m-pt-transcoders-all/layer_2_width_16k_l0_small"
TEXT = "Paris is the capital of France and the home of"


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_bundle: ModelBundle) -> Path:
    cache = tmp_path / "hf-hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_gemma_scope_2(cache, "mlp_out_all/layer_2_width_16k_l0_small", tiny_bundle.d_model, 96)
    write_gemma_scope_2(cache, "transcoder_all/layer_2_width_16k_l0_small", tiny_bundle.d_model, 80, seed=1)
    return cache


def test_loads_offline_with_one_hash_and_the_right_sites(hf_cache: Path, tmp_path: Path) -> None:
    sae, sae_id, digest = load_sae(SAE_REF, tmp_path)
    assert sae_id == "gemma-scope-2-270m-pt-mlp-all/layer_2_width_16k_l0_small"
    assert digest == sae_sha256(sae) and type(sae).__name__ == "JumpReLUSAE"
    assert SAESite.of_sae(sae) == SAESite(2, "hook_mlp_out")
    tc, _, _ = load_sae(TC_REF, tmp_path)
    assert type(tc).__name__ == "JumpReLUTranscoder"
    site = SAESite.of_sae(tc)
    assert site.is_transcoder and site.hook_name == "blocks.2.mlp.hook_in" and site.decoder_site == "hook_mlp_out"
    # the catalogued id (what a spec names) resolves to the same SAE
    assert load_sae(sae_id, tmp_path)[2] == digest


def test_missing_files_say_where_they_were_looked_for(hf_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(SAELoadError, match="not in the local HF cache.*models--google--gemma-scope-2-270m-pt"):
        load_sae("pretrained:gemma-scope-2-270m-pt-mlp-all/layer_3_width_16k_l0_small", tmp_path)
    with pytest.raises(SAELoadError, match="has no SAE"):
        load_sae("pretrained:gemma-scope-2-270m-pt-mlp-all/layer_99_width_1k", tmp_path)
    with pytest.raises(SAELoadError, match="not like"):
        load_sae("pretrained:only-a-release", tmp_path)


@pytest.mark.parametrize("ref", [SAE_REF, TC_REF], ids=["sae", "transcoder"])
def test_catalogue_search_remove_preview_and_reapply(
    ref: str, hf_cache: Path, tiny_bundle: ModelBundle, settings: Settings, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli = ["--model", "tiny", "--cache", str(settings.cache_dir)]
    assert main([*cli, "sae", "catalogue", "--sae", ref, "--catalogue-tokens", "1500"]) == 0, capsys.readouterr().err
    store = open_store(settings.store_path, read_only=True)
    try:
        row = store.list_saes().iloc[-1]
        assert row["source"] == "pretrained" and row["path"] == ref
        sae_id = str(row["sae_id"])
        assert sae_id == ref.removeprefix("pretrained:")
        first = store.feature_detail(sae_id, 0)
    finally:
        store.close()
    word = next(t for t in first["tokens"]["token"] if t.strip())
    assert main([*cli, "features", "search", word.strip(), "--sae", sae_id]) == 0
    assert "feature(s) of" in capsys.readouterr().err
    assert main([*cli, "sae", "list"]) == 0  # lists what `features search` just searched
    listed = capsys.readouterr().out
    assert f"{sae_id}  [pretrained]  load with {ref}" in listed and "No SAE folders under" in listed

    sae = load_sae(ref, settings.saes_dir)[0]
    feature = 3
    rows = tau_rows(tiny_bundle.hf_model, sae, feature, 0.5)
    assert len(rows)  # the page's tau rows exist for a pretrained SAE
    spec = EditSpec.from_dict({
        "name": "gs2", "model": {"id": "tiny", "weights_sha256": tiny_bundle.weights_sha256},
        "sae": {"id": sae_id, "sha256": sae_sha256(sae)},
        "operations": [{"kind": "remove_sae_features", "layer": 2, "features": [feature], "tau": 0.5, "mu": 8.0,
                        "signed": False}]})
    adapter = compile_spec(spec, tiny_bundle, sae_loader=spec_sae_loader(settings.saes_dir))
    changed = sorted({c.neuron for c in adapter.rows})
    assert changed == sorted(rows["neuron"].tolist())  # the removal rewrites exactly the tau rows
    if SAESite.of_sae(sae).is_transcoder:  # the rows' component along d_f is set to -mu_l * M_l
        d = unit_rows(sae.W_dec.detach()[[feature]])[0]
        gamma = layout.post_ffn_gain(tiny_bundle.hf_model, 2)
        after = merged_w_out(layout.w_out(tiny_bundle.hf_model, 2).detach(), adapter.deltas[2])
        coef = (after[changed] * gamma) @ d
        assert torch.allclose(coef, coef[0].expand_as(coef), atol=1e-4) and float(coef[0]) < 0
    ids = tiny_bundle.tokenizer(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        base = tiny_bundle.hf_model(ids).logits
        with use(tiny_bundle, adapter):
            edited = tiny_bundle.hf_model(ids).logits
    assert not torch.allclose(base, edited, atol=1e-4)
    path = tmp_path / "gs2.json"
    save_spec(spec, path)
    again, _ = load_spec(path)
    with torch.no_grad(), use(tiny_bundle, compile_spec(again, tiny_bundle, sae_loader=spec_sae_loader(settings.saes_dir))):
        assert torch.equal(tiny_bundle.hf_model(ids).logits, edited)
    assert main([*cli, "apply", str(path), "--prompt", "Paris is", "--max-new-tokens", "3"]) == 0
    tampered = EditSpec.from_dict({**json.loads(path.read_text()), "sae": {"id": sae_id, "sha256": "0" * 64}})
    with pytest.raises(SpecError, match="hash"):
        compile_spec(tampered, tiny_bundle, sae_loader=spec_sae_loader(settings.saes_dir))
