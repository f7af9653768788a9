"""Exports: the merged checkpoint reloads with plain transformers, the PEFT LoRA folder loads in
PEFT, and nnsight interventions give the in-process adapter's logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from workbench.adapters import use
from workbench.edits import EditSpec, compile_spec
from workbench.exports import EXPORT_SPEC, export_checkpoint, export_lora, intervene, read_export_metadata
from workbench.models import ModelBundle, ModelSource, load_bundle

TEXT = "The cat sat on the mat and"


def spec_for(bundle: ModelBundle, ops: list[dict]) -> EditSpec:
    return EditSpec.from_dict(
        {"name": "export-test", "model": {"id": "tiny", "weights_sha256": bundle.weights_sha256}, "operations": ops}
    )


def test_export_reloads_with_plain_transformers(tiny_bundle: ModelBundle, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = spec_for(
        tiny_bundle,
        [
            {"kind": "ablate_value_vectors", "layer": 1, "neurons": [3, 5, 7], "mode": "noise", "seed": 2},
            {"kind": "prune_neurons", "layer": 3, "neurons": list(range(0, 128, 3))},
        ],
    )
    ov = compile_spec(spec, tiny_bundle)
    ids = tiny_bundle.tokenizer(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        base_logits = tiny_bundle.hf_model(ids).logits
        with use(tiny_bundle, ov):
            edited_logits = tiny_bundle.hf_model(ids).logits
    assert not torch.allclose(base_logits, edited_logits, atol=1e-4)

    out = export_checkpoint(tiny_bundle, ov, spec, tmp_path / "edited")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edited"]  # no temp folder left
    plain = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    plain.eval()
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok(TEXT, return_tensors="pt").input_ids.tolist() == ids.tolist()
    with torch.no_grad():
        reloaded = plain(ids).logits
    assert torch.allclose(reloaded, edited_logits, atol=1e-5)
    with torch.no_grad():
        assert torch.equal(tiny_bundle.hf_model(ids).logits, base_logits)  # base untouched

    meta = read_export_metadata(out)
    assert meta["workbench.base_weights_sha256"] == tiny_bundle.weights_sha256
    assert meta["workbench.spec_sha256"] == spec.sha256()
    assert EditSpec.from_json((out / EXPORT_SPEC).read_text()).sha256() == spec.sha256()
    # the workbench's own loader gives the edited hash the header promised
    again = load_bundle(ModelSource("local", str(out)))
    assert again.weights_sha256 == meta["workbench.edited_weights_sha256"] != tiny_bundle.weights_sha256
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == tiny_bundle.n_layers


def test_export_refusals(tiny_bundle: ModelBundle, tmp_path: Path) -> None:
    spec = spec_for(tiny_bundle, [{"kind": "ablate_value_vectors", "layer": 0, "neurons": [1]}])
    ov = compile_spec(spec, tiny_bundle)
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        export_checkpoint(tiny_bundle, ov, spec, tmp_path / "taken")
    other = spec_for(tiny_bundle, [{"kind": "ablate_value_vectors", "layer": 0, "neurons": [2]}])
    with pytest.raises(ValueError, match="not compiled from this spec"):
        export_checkpoint(tiny_bundle, ov, other, tmp_path / "x")
    na = spec_for(
        tiny_bundle,
        [
            {
                "kind": "neuron_adjust",
                "runtime": [
                    {"layer": 0, "neurons": [1], "forget_mean": [0], "forget_std": [1], "retain_mean": [1], "retain_std": [1]}
                ],
            }
        ],
    )
    with pytest.raises(ValueError, match="cannot be exported"):
        export_checkpoint(tiny_bundle, compile_spec(na, tiny_bundle), na, tmp_path / "y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


MIXED_OPS = [
    {"kind": "ablate_value_vectors", "layer": 0, "neurons": [3, 5, 7], "mode": "scale", "scale": 4.0},  # rows, rank 3
    {"kind": "project_out_direction", "layers": [2], "direction": [((i * 7) % 11) - 5.0 for i in range(64)]},  # rank 1
    {"kind": "prune_neurons", "layer": 3, "neurons": list(range(0, 128, 4))},  # rows, rank 32
]


def _adapter_logits(bundle: ModelBundle, adapter: object, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), use(bundle, adapter):  # type: ignore[arg-type]
        return bundle.hf_model(ids).logits


def test_peft_lora_folder_reproduces_the_merged_checkpoint(tiny_bundle: ModelBundle, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    spec = spec_for(tiny_bundle, MIXED_OPS)
    ad = compile_spec(spec, tiny_bundle)
    assert {layer: type(d).__name__ for layer, d in ad.deltas.items()} == {
        0: "RowDelta", 2: "LowRankDelta", 3: "RowDelta"}
    ids = tiny_bundle.tokenizer(TEXT, return_tensors="pt").input_ids
    merged_dir = export_checkpoint(tiny_bundle, ad, spec, tmp_path / "merged")
    lora_dir = export_lora(tiny_bundle, ad, spec, tmp_path / "lora", base_model=str(tiny_bundle.path))
    assert sorted(p.name for p in lora_dir.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                          EXPORT_SPEC]
    cfg = json.loads((lora_dir / "adapter_config.json").read_text())
    assert cfg["r"] == cfg["lora_alpha"] == 32  # the largest layer rank; scale 1
    assert cfg["target_modules"] == [f"model.layers.{i}.mlp.down_proj" for i in (0, 2, 3)]

    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32).eval()(ids).logits
        base = AutoModelForCausalLM.from_pretrained(str(tiny_bundle.path), dtype=torch.float32).eval()
        peft_model = PeftModel.from_pretrained(base, str(lora_dir)).eval()
        peft_logits = peft_model(ids).logits
    assert not torch.allclose(merged, _adapter_logits(tiny_bundle, None, ids), atol=1e-3)
    assert torch.allclose(peft_logits, merged, atol=1e-4)
    assert torch.allclose(peft_logits, _adapter_logits(tiny_bundle, ad, ids), atol=1e-4)
    # PEFT sees exactly the edited projections
    lora_modules = sorted(n for n, _ in peft_model.named_modules() if n.endswith("down_proj") and "lora" not in n)
    assert len(lora_modules) == tiny_bundle.n_layers
    assert sum(1 for n, m in peft_model.named_modules() if n.endswith("down_proj") and hasattr(m, "lora_A")) == 3


def test_lora_refusals(tiny_bundle: ModelBundle, tmp_path: Path) -> None:
    na = spec_for(tiny_bundle, [{"kind": "neuron_adjust", "runtime": [
        {"layer": 0, "neurons": [1], "forget_mean": [0], "forget_std": [1], "retain_mean": [1], "retain_std": [1]}]}])
    with pytest.raises(ValueError, match="cannot be exported into a LoRA adapter"):
        export_lora(tiny_bundle, compile_spec(na, tiny_bundle), na, tmp_path / "na")
    assert not list(tmp_path.iterdir())


def test_nnsight_trace_equals_the_in_process_adapter(tiny_bundle: ModelBundle) -> None:
    from nnsight import NNsight
    from transformers import AutoModelForCausalLM

    ops = [*MIXED_OPS, {"kind": "neuron_adjust", "deterministic": True, "runtime": [
        {"layer": 1, "neurons": [0, 1, 2], "forget_mean": [0.0] * 3, "forget_std": [100.0] * 3,
         "retain_mean": [50.0] * 3, "retain_std": [100.0] * 3}]}]
    spec = spec_for(tiny_bundle, ops)
    ad = compile_spec(spec, tiny_bundle)
    ids = tiny_bundle.tokenizer(TEXT, return_tensors="pt").input_ids
    lm = NNsight(AutoModelForCausalLM.from_pretrained(str(tiny_bundle.path), dtype=torch.float32).eval())
    with torch.no_grad():
        with lm.trace(ids):
            intervene(lm, ad)
            traced = lm.output.logits.save()
        with lm.trace(ids):
            plain = lm.output.logits.save()
    in_process = _adapter_logits(tiny_bundle, ad, ids)
    assert torch.allclose(plain, _adapter_logits(tiny_bundle, None, ids), atol=1e-5)
    assert not torch.allclose(traced, plain, atol=1e-3)
    assert torch.allclose(traced, in_process, atol=1e-5)


def test_zip_folder_holds_the_folder_and_refuses_a_checkpoint_sized_one(tmp_path: Path) -> None:
    import io
    import zipfile

    from workbench.exports.archive import zip_folder

    folder = tmp_path / "my-edit-lora"
    (folder / "sub").mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "sub" / "w.bin").write_bytes(b"x" * 1000)
    names = sorted(zipfile.ZipFile(io.BytesIO(zip_folder(folder))).namelist())
    assert names == ["my-edit-lora/adapter_config.json", "my-edit-lora/sub/w.bin"]
    with pytest.raises(ValueError, match="copy it from the server"):
        zip_folder(folder, max_bytes=500)
