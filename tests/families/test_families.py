"""Every family of the architecture map, as a tiny random model built from a config (no
download): prepare -> erase -> preview -> export-checkpoint -> reload with plain transformers changes only
the edited output-projection rows; the PEFT folder and an nnsight trace give the in-process
adapter's logits; an unknown family is refused with a sentence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from workbench.adapters import use
from workbench.cli import main
from workbench.config import Settings
from workbench.edits import EditSpec, compile_spec
from workbench.edits.spec import load_spec
from workbench.exports import export_checkpoint, export_lora, intervene
from workbench.models import ModelBundle, layout, load_bundle, parse_source
from workbench.models.tiny import FAMILIES

TEXT = "The cat sat on the mat and"


@pytest.fixture(scope="module", params=FAMILIES)
def family_bundle(request: pytest.FixtureRequest, session_settings: Settings) -> ModelBundle:
    return load_bundle(parse_source(f"tiny:{request.param}"), session_settings)


def test_transformerlens_view_agrees_and_shares_the_weights(family_bundle: ModelBundle) -> None:
    """The bridge boots for every family, computes the HF model's logits, and its W_out is the
    output projection's storage (one copy of the weights)."""
    bundle = family_bundle
    ids = bundle.tokenizer(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(bundle.bridge(ids), bundle.hf_model(ids).logits, atol=1e-4)
    for layer in range(bundle.n_layers):
        assert bundle.bridge.blocks[layer].mlp.W_out.data_ptr() == layout.w_out(bundle.hf_model, layer).data_ptr()
        assert layout.w_out(bundle.hf_model, layer).shape == (bundle.d_mlp, bundle.d_model)


def test_plain_view_decodes_as_the_wrapped_model(family_bundle: ModelBundle) -> None:
    """The preview decodes on the HF modules without the bridge's wrappers (models/plain.py): no
    wrapper is left, the parameters are the same tensors, and the logits are the wrapped model's,
    with an adapter routed too (its taps sit on the HF projections, which both call)."""
    import workbench as wb
    from workbench.adapters import route
    from workbench.models.plain import is_wrapper, plain_view

    bundle = family_bundle
    view = plain_view(bundle.hf_model)
    assert plain_view(bundle.hf_model) is view  # built once
    assert not any(is_wrapper(m) for m in view.modules())
    # every weight the view computes with is the wrapped model's own tensor (the bridge may hold
    # more: GPT-2's and NeoX's joint QKV are also split into q, k, v bridge parameters)
    assert {p.data_ptr() for p in view.parameters()} <= {p.data_ptr() for p in bundle.hf_model.parameters()}
    layer = bundle.n_layers // 2
    edit = wb.edit(bundle, [wb.AblateValueVectors(layer=layer, neurons=list(range(bundle.d_mlp // 2)))], name="half")
    ids = bundle.tokenizer([TEXT, TEXT], return_tensors="pt").input_ids
    with torch.no_grad():
        base = bundle.hf_model(ids).logits
        assert torch.allclose(view(ids).logits, base, atol=1e-5)
        with route(bundle, [None, edit.adapter]):
            wrapped, plain = bundle.hf_model(ids).logits, view(ids).logits
    assert torch.allclose(plain, wrapped, atol=1e-5)
    assert torch.allclose(plain[0], base[0], atol=1e-5)  # row 0 routed no edit
    assert not torch.allclose(plain[1], base[1], atol=1e-4)  # row 1's edit acted in the view


def _neuron_rows(weight: torch.Tensor, base: torch.Tensor, conv1d: bool) -> list[int]:
    """The neurons whose value vector differs (W_out rows: weight columns for nn.Linear)."""
    diff = (weight != base).any(dim=1 if conv1d else 0)
    return torch.nonzero(diff).flatten().tolist()


def test_prepare_erase_export_reload_changes_only_the_edited_rows(
    family_bundle: ModelBundle, session_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    bundle = family_bundle
    source = "tiny:" + bundle.model_id.removeprefix("tiny-")
    cli = ["--model", source, "--cache", str(session_settings.cache_dir)]
    assert main([*cli, "prepare", "--tokens", "1500", "--layers", "1"]) == 0
    spec_path = tmp_path / "hp.json"
    assert main([*cli, "erase", "--concept", "Harry Potter", "--method", "ablate", "--out", str(spec_path),
                 "--no-eval"]) == 0
    assert main([*cli, "apply", str(spec_path), "--prompt", "Harry Potter is", "--max-new-tokens", "3"]) == 0
    assert "edited:" in capsys.readouterr().out  # the side-by-side preview (generation path)
    ckpt = tmp_path / "ckpt"
    assert main([*cli, "export-checkpoint", str(spec_path), "--out", str(ckpt)]) == 0
    capsys.readouterr()

    spec, _ = load_spec(spec_path)
    edited = {op.layer: set(op.neurons) for op in spec.operations}
    assert edited and all(edited.values())
    reloaded = AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=torch.float32)
    assert type(reloaded).__name__ == type(bundle.hf_model).__name__
    base = load_file(str(next(bundle.path.glob("*.safetensors"))))
    after = load_file(str(ckpt / "model.safetensors"))
    assert set(after) == set(base)
    arch = bundle.architecture
    for name, tensor in after.items():
        layer = next((lay for lay in edited if name == layout.out_proj_name(bundle.hf_model, lay)), None)
        if layer is None:
            assert torch.equal(tensor, base[name]), f"{name} changed but no edit names it"
        else:
            assert set(_neuron_rows(tensor, base[name], arch.conv1d)) == edited[layer]
    with torch.no_grad():  # the reloaded model computes what the in-process adapter does
        ids = bundle.tokenizer(TEXT, return_tensors="pt").input_ids
        adapter = compile_spec(spec, bundle)
        with use(bundle, adapter):
            in_process = bundle.hf_model(ids).logits
        assert torch.allclose(reloaded.eval()(ids).logits, in_process, atol=1e-4)


def _mixed_spec(bundle: ModelBundle, extra: list[dict] | None = None) -> EditSpec:
    """Rows and rank 1 together on two layers, plus `extra` operations."""
    d = bundle.d_model
    return EditSpec.from_dict({"name": "family-test", "model": {"id": bundle.model_id,
                                                                "weights_sha256": bundle.weights_sha256},
                               "operations": [
        {"kind": "ablate_value_vectors", "layer": 0, "neurons": [3, 5, 7], "mode": "scale", "scale": 4.0},
        {"kind": "project_out_direction", "layers": [2], "direction": [((i * 7) % 11) - 5.0 for i in range(d)]},
        *(extra or []),
    ]})


def test_peft_folder_reproduces_the_merged_checkpoint(family_bundle: ModelBundle, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    bundle = family_bundle
    spec = _mixed_spec(bundle)
    adapter = compile_spec(spec, bundle)
    merged_dir = export_checkpoint(bundle, adapter, spec, tmp_path / "merged")
    lora_dir = export_lora(bundle, adapter, spec, tmp_path / "lora", base_model=str(bundle.path))
    cfg = json.loads((lora_dir / "adapter_config.json").read_text())
    assert cfg["target_modules"] == [layout.out_proj_module_name(bundle.hf_model, i) for i in (0, 2)]
    assert cfg["fan_in_fan_out"] is bundle.architecture.conv1d
    ids = bundle.tokenizer(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32).eval()(ids).logits
        base = AutoModelForCausalLM.from_pretrained(str(bundle.path), dtype=torch.float32).eval()
        plain = base(ids).logits
        peft_logits = PeftModel.from_pretrained(base, str(lora_dir)).eval()(ids).logits
    assert not torch.allclose(merged, plain, atol=1e-3)
    assert torch.allclose(peft_logits, merged, atol=1e-4)


def test_nnsight_trace_equals_the_in_process_adapter(family_bundle: ModelBundle) -> None:
    from nnsight import NNsight
    from transformers import AutoModelForCausalLM

    bundle = family_bundle
    spec = _mixed_spec(bundle, [{"kind": "neuron_adjust", "deterministic": True, "runtime": [
        {"layer": 1, "neurons": [0, 1, 2], "forget_mean": [0.0] * 3, "forget_std": [100.0] * 3,
         "retain_mean": [50.0] * 3, "retain_std": [100.0] * 3}]}])
    adapter = compile_spec(spec, bundle)
    ids = bundle.tokenizer(TEXT, return_tensors="pt").input_ids
    lm = NNsight(AutoModelForCausalLM.from_pretrained(str(bundle.path), dtype=torch.float32).eval())
    with torch.no_grad():
        with lm.trace(ids):
            intervene(lm, adapter)
            traced = lm.output.logits.save()
        with use(bundle, adapter):
            in_process = bundle.hf_model(ids).logits
        plain = bundle.hf_model(ids).logits
    assert not torch.allclose(traced, plain, atol=1e-3)
    assert torch.allclose(traced, in_process, atol=1e-5)


def test_unknown_family_is_refused_with_the_supported_list(tmp_path: Path, session_settings: Settings) -> None:
    folder = tmp_path / "t5ish"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]}))
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(layout.UnsupportedArchitecture, match="Supported families: Gemma 3.*GPT-2.*GPT-NeoX"):
        load_bundle(parse_source(str(folder)), session_settings)
