"""The real embedded Gemma 3 270M: loads offline, knows Paris, has readable value vectors."""

from __future__ import annotations

import pytest
import torch

from workbench.lenses import vocab
from workbench.lenses.tokens import clean_token_mask, vocab_strings
from workbench.models import layout

pytestmark = pytest.mark.integration


def test_embedded_model_loads_offline_with_expected_shape(embedded_bundle):
    s = embedded_bundle.summary()
    assert (s["layers"], s["d_model"], s["d_mlp"], s["vocab_size"]) == (18, 640, 2048, 262144)
    assert len(embedded_bundle.tokenizer) >= 262144
    assert embedded_bundle.bridge.blocks[6].mlp.W_out.data_ptr() == layout.w_out(embedded_bundle.hf_model, 6).data_ptr()


def test_greedy_completion_knows_paris(embedded_bundle):
    tok = embedded_bundle.tokenizer
    ids = tok("The Eiffel Tower is located in the city of", return_tensors="pt").input_ids
    with torch.no_grad():
        out = embedded_bundle.hf_model.generate(ids, max_new_tokens=5, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])


def test_hf_and_bridge_logits_agree_on_real_model(embedded_bundle):
    ids = embedded_bundle.tokenizer("Albert Einstein developed the theory of", return_tensors="pt").input_ids
    with torch.no_grad():
        hf = embedded_bundle.hf_model(ids).logits
        tl = embedded_bundle.bridge(ids)
    assert (hf - tl).abs().max() < 1e-3


def test_some_value_vectors_project_to_recognisable_words(embedded_bundle):
    """Mid/late-layer value vectors whose top tokens include common English words."""
    model = embedded_bundle.hf_model
    mask = clean_token_mask(embedded_bundle.tokenizer, embedded_bundle.vocab_size)
    strings = vocab_strings(embedded_bundle.tokenizer, embedded_bundle.vocab_size)
    rows = vocab.value_vector_directions(model, 15, "gain_aware")[:256]
    proj = vocab.project_topk(rows, layout.unembed(model), k=10, mask=mask)
    english = {" the", " and", " of", " city", " music", " war", " water", " king", " game", " film",
               " school", " book", " river", " church", " team", " time", " people", " world", " year",
               " family", " language", " country", " state", " love", " death", " money", " food"}
    tops = [{strings[i].lower() for i in row} for row in proj.top_ids.tolist()]
    readable = [t for t in tops if len(t & english) > 0]
    assert len(readable) >= 3, tops[:5]
