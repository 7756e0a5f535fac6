#!/usr/bin/env bash
# The whole test suite on a fresh clone: creates or refreshes .venv with the test extras,
# installs what the tests need, lints, then runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
ensure_venv "test,postgres"

echo "==> ruff"
.venv/bin/ruff check engine tui_hpo tests benchmarks
echo "==> import contracts (the engine never imports textual; the TUI never imports torch)"
.venv/bin/lint-imports --config pyproject.toml
echo "==> pytest"
exec .venv/bin/python -m pytest "$@"
