"""Export an edited checkpoint: base weights with an adapter merged in, loadable by plain
`transformers.AutoModelForCausalLM.from_pretrained(DIR)`.

The folder holds model.safetensors (same tensor names as the base checkpoint; metadata names
the base weights hash, the spec hash and the edited weights hash), config.json, the
generation config, the tokenizer files and the spec as workbench-edit.json. It is written to
a temporary folder beside the target and renamed (workbench/atomic.py), so a crash never leaves a half checkpoint.
Run-time operations (neuron_adjust) are hooks, not weights, and cannot be exported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from workbench.adapters import Adapter, merged_w_out
from workbench.atomic import atomic_folder
from workbench.edits.spec import EditSpec
from workbench.exports.exportable import check_exportable
from workbench.models import layout
from workbench.models.hashing import named_tensors_sha256

EXPORT_WEIGHTS = "model.safetensors"
EXPORT_SPEC = "workbench-edit.json"


def checkpoint_keys(folder: Path) -> list[str]:
    """Tensor names stored in a checkpoint folder's safetensors files (the names to write back)."""
    from safetensors import safe_open

    keys: list[str] = []
    for f in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            keys.extend(st.keys())
    if not keys:
        raise FileNotFoundError(f"{folder} has no safetensors weights to take tensor names from.")
    return keys


def _base_tensor(bundle: Any, key: str) -> torch.Tensor:
    """The loaded model's tensor for a checkpoint key, or the stored one where transformers
    renames on load (GPT-NeoX stores `embed_out.weight`, transformers 5 calls it `lm_head`).
    Either way it is a base weight, which no edit touches; it comes in the model's dtype."""
    try:
        return layout.resolve_attr(bundle.hf_model, key).detach()
    except KeyError:
        from safetensors import safe_open

        dtype = next(bundle.hf_model.parameters()).dtype
        for f in sorted(Path(bundle.path).glob("*.safetensors")):
            with safe_open(str(f), "pt") as st:
                if key in st.keys():
                    return st.get_tensor(key).to(dtype)
        raise


def edited_state(bundle: Any, adapter: Adapter) -> tuple[dict[str, torch.Tensor], str]:
    """The checkpoint's tensors with the adapter merged (names as in the base checkpoint), and
    the edited weights hash (what `ModelBundle.weights_sha256` will be after reloading).

    Only the edited output projections are new tensors (W_out + Delta); the rest are the base
    tensors themselves, which are never written."""
    tensors = {k: _base_tensor(bundle, k) for k in checkpoint_keys(bundle.path)}
    for layer, delta in adapter.deltas.items():
        name = layout.out_proj_name(bundle.hf_model, layer)
        merged = merged_w_out(layout.w_out(bundle.hf_model, layer).detach(), delta)  # [d_mlp, d_model]
        tensors[name] = layout.w_out_to_storage(bundle.hf_model, merged).contiguous()
    named = dict(layout.named_parameters(bundle.hf_model))
    digest = named_tensors_sha256((n, tensors.get(n, p.detach())) for n, p in named.items())
    return tensors, digest


def export_checkpoint(
    bundle: Any,
    adapter: Adapter,
    spec: EditSpec,
    out_dir: Path,
    *,
    overwrite: bool = False,
) -> Path:
    """Write the edited checkpoint folder `out_dir`; returns its path."""
    from safetensors.torch import save_file

    check_exportable(adapter, spec, "a checkpoint")
    tensors, edited_sha = edited_state(bundle, adapter)
    metadata = {
        "format": "pt",
        "workbench.base_weights_sha256": bundle.weights_sha256,
        "workbench.edited_weights_sha256": edited_sha,
        "workbench.spec_sha256": spec.sha256(),
        "workbench.spec_name": spec.name,
    }
    with atomic_folder(Path(out_dir), overwrite=overwrite) as tmp:
        save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp / EXPORT_WEIGHTS), metadata=metadata)
        bundle.hf_model.config.save_pretrained(str(tmp))
        gen_cfg = getattr(bundle.hf_model, "generation_config", None)
        if gen_cfg is not None:
            gen_cfg.save_pretrained(str(tmp))
        bundle.tokenizer.save_pretrained(str(tmp))
        (tmp / EXPORT_SPEC).write_text(spec.to_json())
    return Path(out_dir)


def read_export_metadata(folder: Path) -> dict[str, str]:
    """The workbench metadata header of an exported checkpoint."""
    from safetensors import safe_open

    with safe_open(str(Path(folder) / EXPORT_WEIGHTS), "pt") as st:
        return dict(st.metadata() or {})
