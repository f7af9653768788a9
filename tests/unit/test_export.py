"""Export: the edited checkpoint reloads with plain transformers and reproduces edited logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from workbench.adapters import use
from workbench.edits import EditSpec, compile_spec
from workbench.export import EXPORT_SPEC, export_checkpoint, read_export_metadata
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
