"""Export an adapter as a PEFT LoRA folder, loadable by `peft.PeftModel.from_pretrained` and
servable next to many other users' edits by vLLM's multi-LoRA.

Every layer delta Delta: [d_mlp, d_model] on W_out is already factored (adapters/deltas.py),
and each form gives LoRA factors with lora_B @ lora_A = Delta^T, the delta of the nn.Linear
weight down_proj.weight: [d_model, d_mlp]:

  RowDelta (r rows)  lora_A = one-hot row selectors [r, d_mlp], lora_B = new-minus-old rows^T
  LowRankDelta (k)   lora_A = a^T [k, d_mlp],                 lora_B = b^T [d_model, k]
  DenseDelta         lora_A = Delta^T [d_model, d_mlp],       lora_B = identity

PEFT adds lora_B(lora_A(x)) * lora_alpha / r. One rank serves every layer (vLLM takes a single
rank per adapter): r is the largest layer rank, smaller layers are padded with zero factors
(which add nothing), and lora_alpha = r, so the scale is exactly 1.

The folder holds adapter_config.json, adapter_model.safetensors (metadata: base weights hash,
spec hash) and the spec as workbench-edit.json. Run-time operations (neuron_adjust) are hooks,
not weights, and are refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from workbench.adapters import Adapter
from workbench.atomic import atomic_folder
from workbench.edits.spec import EditSpec
from workbench.exports.checkpoint import EXPORT_SPEC
from workbench.exports.exportable import check_exportable
from workbench.models import layout

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # PeftModel wraps the causal LM as base_model.model
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM's --max-lora-rank accepts


def vllm_max_lora_rank(r: int) -> int | None:
    """The smallest --max-lora-rank vLLM accepts for an adapter of rank r (None: above 512)."""
    return next((v for v in VLLM_LORA_RANKS if v >= r), None)


def lora_tensors(adapter: Adapter, hf_model: Any) -> tuple[dict[str, torch.Tensor], int, list[str]]:
    """({PEFT key: tensor}, uniform rank r, target module names) for an adapter's deltas.

    lora_A [r, d_mlp] and lora_B [d_model, r] act on the module's input and output, so they are
    the same for nn.Linear and GPT-2's Conv1D; only the config's fan_in_fan_out differs."""
    d_mlp = layout.d_mlp(hf_model)
    if not adapter.deltas:
        raise ValueError("This edit changes no weights, so there is no LoRA adapter to write.")
    factors = {layer: d.lora(d_mlp) for layer, d in sorted(adapter.deltas.items())}
    r = max(a.shape[0] for a, _ in factors.values())
    tensors: dict[str, torch.Tensor] = {}
    targets: list[str] = []
    for layer, (a, b) in factors.items():  # a: [k, d_mlp], b: [d_model, k]
        k = a.shape[0]
        a_pad = torch.zeros(r, a.shape[1], dtype=torch.float32)
        b_pad = torch.zeros(b.shape[0], r, dtype=torch.float32)
        a_pad[:k], b_pad[:, :k] = a.float(), b.float()
        module = layout.out_proj_module_name(hf_model, layer)
        targets.append(module)
        tensors[f"{PEFT_PREFIX}{module}.lora_A.weight"] = a_pad.contiguous()
        tensors[f"{PEFT_PREFIX}{module}.lora_B.weight"] = b_pad.contiguous()
    return tensors, r, targets


def lora_config(r: int, targets: list[str], base_model: str, *, fan_in_fan_out: bool = False) -> dict[str, Any]:
    """adapter_config.json for a plain LoRA on the listed modules, scale lora_alpha / r = 1.

    `fan_in_fan_out` is PEFT's flag for weights stored [in, out] (GPT-2's Conv1D)."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": r,
        "lora_alpha": r,
        "target_modules": targets,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": fan_in_fan_out,
        "use_rslora": False,
        "use_dora": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }


def export_lora(
    bundle: Any,
    adapter: Adapter,
    spec: EditSpec,
    out_dir: Path,
    *,
    base_model: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a PEFT LoRA folder for this adapter; returns its path.

    `base_model` goes into adapter_config.json (default: the spec's model id) so that
    `PeftModel.from_pretrained(base, DIR)` and vLLM know which base the adapter belongs to."""
    from safetensors.torch import save_file

    check_exportable(adapter, spec, "a LoRA adapter")
    tensors, r, targets = lora_tensors(adapter, bundle.hf_model)
    config = lora_config(r, targets, base_model or spec.model.id,
                         fan_in_fan_out=layout.architecture(bundle.hf_model).conv1d)
    metadata = {
        "format": "pt",
        "workbench.base_weights_sha256": bundle.weights_sha256,
        "workbench.spec_sha256": spec.sha256(),
        "workbench.spec_name": spec.name,
    }
    with atomic_folder(Path(out_dir), overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata=metadata)
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=1))
        (tmp / EXPORT_SPEC).write_text(spec.to_json())
    return Path(out_dir)


def describe_lora_export(out_dir: Path, n_modules: int) -> str:
    """How to load a written LoRA folder, with the vLLM rank flag it needs (or why vLLM can't):
    the CLI prints it and the app's export job shows it."""
    r = json.loads((Path(out_dir) / ADAPTER_CONFIG).read_text())["r"]
    vllm = vllm_max_lora_rank(r)
    serve = (f"vLLM: --enable-lora --max-lora-rank {vllm}" if vllm else
             f"vLLM takes LoRA ranks up to {VLLM_LORA_RANKS[-1]}, this one is {r}: serve the merged checkpoint instead")
    return (f"wrote {out_dir} (LoRA rank {r} on {n_modules} down_proj module(s)): load it with "
            f"peft.PeftModel.from_pretrained(base_model, {str(out_dir)!r}); {serve}")
