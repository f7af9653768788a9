"""Random SAEs and transcoders written exactly as the Hugging Face cache holds Gemma Scope 2,
for tests and benchmarks (the way models/tiny.py builds random models): no download, and
the loader under test reads them through the same cache lookup as real files.

    <cache>/models--google--gemma-scope-2-270m-pt/refs/main            -> <rev>
    <cache>/models--google--gemma-scope-2-270m-pt/snapshots/<rev>/<path>/params.safetensors
                                                                     .../config.json
`<path>` is what SAELens's registry gives for the SAE id, e.g. release
`gemma-scope-2-270m-pt-mlp-all`, id `layer_6_width_16k_l0_small` ->
`mlp_out_all/layer_6_width_16k_l0_small`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

GEMMA_SCOPE_2_REPO = "google/gemma-scope-2-270m-pt"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def write_gemma_scope_2(cache: Path, folder: str, d_in: int, d_sae: int, *, seed: int = 0,
                        threshold: float = 0.02, repo: str = GEMMA_SCOPE_2_REPO) -> Path:
    """One random JumpReLU folder (w_enc [d_in, d_sae], w_dec [d_sae, d_in], b_enc, b_dec,
    threshold) in the cache layout; returns the snapshot folder."""
    from safetensors.torch import save_file

    root = Path(cache) / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(REVISION)
    out = root / "snapshots" / REVISION / folder
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    save_file({"w_enc": torch.randn(d_in, d_sae, generator=g) / d_in**0.5,
               "w_dec": torch.randn(d_sae, d_in, generator=g) / d_in**0.5,
               "b_enc": torch.zeros(d_sae), "b_dec": torch.zeros(d_in),
               "threshold": torch.full((d_sae,), threshold)}, str(out / "params.safetensors"))
    (out / "config.json").write_text(json.dumps({"architecture": "jump_relu", "model_name": "gemma-v3-270m-pt"}))
    return out
