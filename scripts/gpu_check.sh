#!/usr/bin/env bash
# The short GPU check: on a machine with a CUDA GPU (after the README's setup), load the embedded
# model in bf16, run a fast erase (ablate, with its scorecard), a side-by-side preview, a scorecard
# and both exports, and print each step's time. Under 5 minutes on a lab GPU.
#   bash scripts/gpu_check.sh            # cuda, bfloat16
#   DEVICE=cpu bash scripts/gpu_check.sh # the same steps on the CPU (to check the script itself)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .venv/bin/activate ] && . .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python - "${DEVICE:-cuda}" "${DTYPE:-bfloat16}" <<'PY'
import sys, tempfile, time
from pathlib import Path

import torch

import workbench as wb
from workbench.exports import export_checkpoint, export_lora

device, dtype = sys.argv[1], sys.argv[2]
clock = time.perf_counter()
def step(name: str, t0: float) -> float:
    now = time.perf_counter()
    print(f"{name:<34} {now - t0:7.1f} s", flush=True)
    return now

print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}"
      + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""))
t = time.perf_counter()
model = wb.load("embedded", device=device, dtype=dtype)
t = step(f"load ({model.summary()['dtype']} on {model.summary()['device']})", t)
edit = wb.erase(model, "Paris", method="ablate", progress=False)
t = step("erase --method ablate (+ scorecard)", t)
print("  ", edit.scorecard.outcome if edit.scorecard else "no scorecard")
base, edited = wb.preview(model, "The Eiffel Tower is in the city of", edit, max_new_tokens=48)
dt = time.perf_counter() - t
t = step("preview, base + edited, 48 tokens", t)
print(f"   {2 * 48 / dt:.1f} tok/s in total · base: {base[:60]!r} · edited: {edited[:60]!r}")
card = wb.score(model, "Paris", edit, progress=False)
t = step("scorecard", t)
with tempfile.TemporaryDirectory() as tmp:
    export_checkpoint(model, edit.adapter, edit.spec, Path(tmp) / "ckpt")
    export_lora(model, edit.adapter, edit.spec, Path(tmp) / "lora")
t = step("export checkpoint + LoRA", t)
print(f"{'total':<34} {time.perf_counter() - clock:7.1f} s")
PY
