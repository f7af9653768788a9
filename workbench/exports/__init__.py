"""Ways an edit leaves the process: a merged safetensors checkpoint (plain transformers), a
PEFT LoRA folder (PEFT, vLLM multi-LoRA) and nnsight interventions (local or NDIF)."""

from workbench.exports.checkpoint import EXPORT_SPEC, edited_state, export_checkpoint, read_export_metadata
from workbench.exports.lora import export_lora, lora_tensors
from workbench.exports.trace import intervene

__all__ = [
    "EXPORT_SPEC",
    "edited_state",
    "export_checkpoint",
    "export_lora",
    "intervene",
    "lora_tensors",
    "read_export_metadata",
]
