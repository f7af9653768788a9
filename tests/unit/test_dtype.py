"""bf16 and the device option on CPU (CI has no GPU; this CPU runs bf16 natively): the weights
load in bf16, the hash is the stored bytes', edits compile in bf16, the adapter equals the
merged export, and a missing GPU is a sentence (the erase methods through the CLI in bf16:
tests/workflows/test_bf16_cli.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from workbench.adapters import use
from workbench.config import Settings
from workbench.edits import EditSpec, compile_spec
from workbench.exports import export_checkpoint
from workbench.models import ModelBundle, load_bundle, parse_source
from workbench.models.hashing import model_weights_sha256
from workbench.models.placement import resolve_device, resolve_dtype

TEXT = "The cat sat on the mat and"


@pytest.fixture(scope="module")
def bf16_bundle(session_settings: Settings) -> ModelBundle:
    return load_bundle(parse_source("tiny"), replace(session_settings, dtype="bfloat16"))


def test_bf16_load_has_its_own_hash_on_the_stored_bytes(bf16_bundle: ModelBundle, tiny_bundle: ModelBundle) -> None:
    assert bf16_bundle.dtype == torch.bfloat16 and tiny_bundle.dtype == torch.float32
    assert all(p.dtype == torch.bfloat16 for p in bf16_bundle.hf_model.parameters())
    assert bf16_bundle.weights_sha256 == model_weights_sha256(bf16_bundle.hf_model)
    assert bf16_bundle.weights_sha256 != tiny_bundle.weights_sha256
    assert bf16_bundle.summary()["dtype"] == "bfloat16"


def test_edits_compile_in_bf16_and_equal_the_merged_export(bf16_bundle: ModelBundle, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    bundle = bf16_bundle
    spec = EditSpec.from_dict({"name": "bf16", "model": {"id": "tiny", "weights_sha256": bundle.weights_sha256},
                               "operations": [
        {"kind": "ablate_value_vectors", "layer": 1, "neurons": [3, 5, 7], "mode": "zero"},
        {"kind": "project_out_direction", "layers": [2], "direction": [((i * 7) % 11) - 5.0 for i in range(64)]},
    ]})
    adapter = compile_spec(spec, bundle)
    before = {n: p.detach().clone() for n, p in bundle.hf_model.named_parameters()}
    ids = bundle.tokenizer(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        plain = bundle.hf_model(ids).logits
        with use(bundle, adapter):
            edited = bundle.hf_model(ids).logits
    assert edited.dtype == torch.bfloat16
    assert not torch.allclose(edited.float(), plain.float(), atol=1e-2)
    ckpt = export_checkpoint(bundle, adapter, spec, tmp_path / "ckpt")
    reloaded = AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=torch.bfloat16).eval()
    assert next(reloaded.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        merged = reloaded(ids).logits
    # bf16 rounds the merged weights once and the adapter's sum each step: close, not equal
    assert (merged.float() - edited.float()).abs().max() < 0.05 * edited.float().abs().max()
    assert all(torch.equal(p, before[n]) for n, p in bundle.hf_model.named_parameters())  # base untouched


def test_device_and_dtype_options_say_what_is_wrong() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype("bf16") == torch.bfloat16 and resolve_dtype("float32") == torch.float32
    with pytest.raises(ValueError, match="choose float32 or bfloat16"):
        resolve_dtype("float16")
    with pytest.raises(ValueError, match="Unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="torch sees no GPU"):
            resolve_device("cuda")
