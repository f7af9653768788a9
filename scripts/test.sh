#!/usr/bin/env bash
# Install everything the tests need into .venv and run the whole suite (unit, integration
# on the embedded model, end-to-end in headless Chromium). Offline: no model hub is reached.
#   bash scripts/test.sh              the whole suite (what .ci/run runs)
#   bash scripts/test.sh --fast       the fast tier: mypy, then the tests/unit folder on both cores (no browser needed)
#   bash scripts/test.sh ARGS...      pytest with ARGS (a folder, a file, -k, -m ...)
set -euo pipefail
cd "$(dirname "$0")/.."
fast=0
if [ "${1:-}" = "--fast" ]; then
  fast=1
  shift
  set -- tests/unit -n 2 "$@"
fi
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
pip install -q -r requirements-dev.txt
pip install -q --no-deps -r requirements-data.txt
# the package itself, editable: `import workbench` from any folder, the `workbench` command
pip install -q --no-deps -e .
if [ "$fast" = "0" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium install failed: e2e tests will be skipped" >&2
  else
    echo "chromium not found: e2e tests will be skipped (install Debian's chromium package)" >&2
  fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# types first (pyproject.toml's [tool.mypy]: the workbench package), in both tiers
echo "mypy: checking workbench/ ..." >&2
python -m mypy || { echo "mypy found type errors in workbench/ (above)" >&2; exit 1; }
set +e
python -m pytest -q -p no:cacheprovider "$@"
exit $?
