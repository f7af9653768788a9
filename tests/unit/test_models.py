"""ModelBundle: one shared copy of the weights, HF and TransformerLens agree, pickles refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from workbench.models import ModelSource, UnsafeCheckpointError, layout, load_bundle, parse_source
from workbench.models.hashing import model_weights_sha256, tensor_sha256
from workbench.models.safety import check_safetensors_folder


def test_hf_and_transformerlens_logits_agree(tiny_bundle):
    ids = tiny_bundle.tokenizer(["The city of Paris is the capital"], return_tensors="pt").input_ids
    with torch.no_grad():
        hf = tiny_bundle.hf_model(ids).logits
        tl = tiny_bundle.bridge(ids)
    assert torch.allclose(hf, tl, atol=1e-5)


def test_editing_hf_down_proj_is_visible_in_transformerlens_and_back(tiny_bundle):
    hf_w = tiny_bundle.hf_model.model.layers[1].mlp.down_proj.weight
    tl_w = tiny_bundle.bridge.blocks[1].mlp.W_out
    assert tl_w.shape == (tiny_bundle.d_mlp, tiny_bundle.d_model)
    before = hf_w.detach().clone()
    try:
        with torch.no_grad():
            hf_w[3, 5] += 7.0  # HF [d_model, d_mlp] -> TL W_out[5, 3]
        assert float(tl_w[5, 3]) == pytest.approx(float(before[3, 5]) + 7.0)
        with torch.no_grad():
            tl_w[9, 2] = -3.0
        assert float(hf_w[2, 9]) == -3.0
    finally:
        with torch.no_grad():
            hf_w.copy_(before)


def test_bundle_holds_one_copy_of_the_weights(tiny_bundle):
    hf_ptrs = {p.data_ptr() for p in tiny_bundle.hf_model.parameters()}
    tl_params = list(tiny_bundle.bridge.parameters())
    assert tl_params, "the bridge exposes parameters"
    # Every tensor the bridge holds is storage the HF model already owns.
    assert {p.untyped_storage().data_ptr() for p in tl_params} <= {
        p.untyped_storage().data_ptr() for p in tiny_bundle.hf_model.parameters()
    }
    assert layout.w_out(tiny_bundle.hf_model, 2).data_ptr() in hf_ptrs


def test_bundle_holds_one_tokenizer(tiny_bundle):
    """The bridge reuses the bundle's tokenizer: no second copy loaded from disk."""
    assert tiny_bundle.bridge.tokenizer is tiny_bundle.tokenizer


def test_freed_construction_tables_leave_the_tokenizer_working(tiny_bundle, tmp_path: Path):
    """Gemma's tokenizer class keeps Python copies of vocabulary and merges (~170 MB for the
    embedded model); freeing them leaves encoding, decoding and saving unchanged."""
    from transformers import AutoTokenizer, GemmaTokenizer

    from workbench.models.bundle import _drop_construction_tables

    tok = GemmaTokenizer.from_pretrained(str(tiny_bundle.path), add_bos_token=True)
    ref = GemmaTokenizer.from_pretrained(str(tiny_bundle.path), add_bos_token=True)
    assert tok._vocab and tok._merges
    _drop_construction_tables(tok)
    assert tok._vocab is None and tok._merges is None
    texts = ["The city of Paris is the capital", "Zelda <b> 日本"]
    assert tok(texts)["input_ids"] == ref(texts)["input_ids"]
    assert tok.decode(tok(texts[0])["input_ids"]) == ref.decode(ref(texts[0])["input_ids"])
    tok.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(str(tmp_path))(texts)["input_ids"] == ref(texts)["input_ids"]


def test_weights_hash_is_content_hash(tiny_bundle):
    assert tiny_bundle.weights_sha256 == model_weights_sha256(tiny_bundle.hf_model)
    w = tiny_bundle.hf_model.model.layers[0].mlp.down_proj.weight
    h = tensor_sha256(w)
    old = w[0, 0].item()
    with torch.no_grad():
        w[0, 0] = old + 1.0
    try:
        assert tensor_sha256(w) != h
    finally:
        with torch.no_grad():
            w[0, 0] = old
    assert tensor_sha256(w) == h


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pkl"])
def test_pickle_checkpoints_are_refused(tmp_path: Path, suffix: str, session_settings):
    (tmp_path / f"pytorch_model{suffix}").write_bytes(b"\x80\x04not really a pickle")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UnsafeCheckpointError, match="safetensors"):
        check_safetensors_folder(tmp_path)
    with pytest.raises(UnsafeCheckpointError):
        load_bundle(ModelSource("local", str(tmp_path)), session_settings)


def test_local_folder_source_loads_the_same_weights(tiny_bundle, session_settings):
    local = load_bundle(parse_source(str(tiny_bundle.path)), session_settings)
    assert local.source.kind == "local"
    assert local.weights_sha256 == tiny_bundle.weights_sha256


def test_parse_source():
    assert parse_source("embedded").kind == "embedded"
    assert parse_source("tiny").kind == "tiny"
    assert parse_source("hub:google/gemma-3-270m") == ModelSource("hub", "google/gemma-3-270m")
    with pytest.raises(ValueError, match="neither"):
        parse_source("./no/such/folder")


def test_hub_source_refused_offline(session_settings, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        load_bundle(ModelSource("hub", "google/gemma-3-270m"), session_settings)


def test_skinny_unembedding_equals_linear(tiny_bundle, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import torch.nn.functional as F

    import workbench.models.skinny as skinny

    monkeypatch.setattr(skinny, "BLOCK_ROWS", 128)  # the 300 outputs below take 3 blocks, the last one short

    from workbench.models.skinny import (
        BUCKETS,
        SKINNY_MAX_ROWS,
        install_skinny_unembedding,
        measure_plan,
        skinny_linear,
    )

    g = torch.Generator().manual_seed(0)
    w, bias = torch.randn(300, 24, generator=g), torch.randn(300, generator=g)
    bias0 = bias.clone()
    for shape in [(1, 24), (2, 24), (3, 1, 24), (2, 5, 24), (SKINNY_MAX_ROWS + 1, 24)]:
        x = torch.randn(*shape, generator=g)
        for b in (None, bias):
            for plan in (None, {m: ("linear", 16 if m < 16 else m) for m in BUCKETS},
                         {m: ("skinny", 16) for m in BUCKETS}):  # padded to more rows: same rows out
                for mode in (torch.enable_grad, torch.inference_mode):  # the bias is added in place without autograd
                    with mode():
                        got = skinny_linear(x, w, b, plan)
                    assert got.shape == (*shape[:-1], 300) and got.is_contiguous()
                    assert torch.allclose(got, F.linear(x, w, b), atol=1e-5), (shape, plan, mode)
    assert torch.equal(bias, bias0)  # added in place to the output, never to the bias
    # with autograd on, the product still differentiates (one block, as the optimisation needs)
    wg = w.clone().requires_grad_(True)
    skinny_linear(torch.randn(4, 24, generator=g), wg, None, {m: ("skinny", m) for m in BUCKETS}).sum().backward()
    assert wg.grad is not None and wg.grad.shape == w.shape
    plan = measure_plan(w, reps=1)
    assert set(plan) == set(BUCKETS) and all(r >= m and k in ("linear", "skinny") for m, (k, r) in plan.items())
    # installed on the loaded model (forced: on load it is installed only where it measures faster),
    # batched last-position logits equal the plain product
    assert install_skinny_unembedding(tiny_bundle.hf_model, calibrate=False)
    ids = tiny_bundle.tokenizer(["The cat sat on the mat"], return_tensors="pt").input_ids.repeat(2, 1)
    with torch.no_grad():
        out = tiny_bundle.hf_model(ids, logits_to_keep=1, output_hidden_states=True)
    head = tiny_bundle.hf_model.get_output_embeddings()
    assert getattr(getattr(head, "_original_component", head), "_workbench_skinny", False)
    hidden = out.hidden_states[-1][:, -1:]  # [2, 1, d_model], after the final norm
    assert torch.allclose(out.logits, F.linear(hidden, layout.unembed(tiny_bundle.hf_model).T), atol=1e-4)


def test_hashes_are_defined_on_stored_bytes() -> None:
    """fp32 hashes its raw little-endian bytes (hashes written before dtypes stay valid); bf16
    hashes its own two-byte values under its dtype's name, so a bf16 load has its own hash."""
    import hashlib

    t = torch.randn(5, 3)
    assert tensor_sha256(t) == hashlib.sha256(t.numpy().astype("<f4").tobytes()).hexdigest()
    b = t.to(torch.bfloat16)
    assert tensor_sha256(b) != tensor_sha256(b.float())  # same numbers, other stored bytes
    assert tensor_sha256(b) == hashlib.sha256(b"torch.bfloat16" + b.view(torch.int16).numpy().tobytes()).hexdigest()
    assert tensor_sha256(t.T) == tensor_sha256(t.T.contiguous())  # layout does not matter, values do


def test_row_direction_names_the_post_ffn_gain_only_where_the_family_has_one() -> None:
    from workbench.models.layout import architecture_for

    assert "(1 + post-FFN norm weight)" in architecture_for("gemma3_text").row_direction
    assert "× post-FFN norm weight" in architecture_for("olmo2").row_direction
    for family in ("llama", "qwen2", "gpt2", "gpt_neox"):
        assert "post-FFN" not in architecture_for(family).row_direction, family
