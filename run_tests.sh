#!/usr/bin/env bash
# The whole test suite on a fresh clone: creates or refreshes .venv with the test extras,
# installs what the tests need, lints, then runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
# Bytecode is written as each module is first imported, and read by the suite's hundreds of
# processes after that: where PYTHONDONTWRITEBYTECODE is set (our CI machine), each would compile
# all it imports from source again, and compiling all of site-packages up front (19,000 files,
# most never imported) takes 40 s.
unset PYTHONDONTWRITEBYTECODE
source scripts/venv.sh
ensure_venv "test,postgres,ray"
echo "==> ready to test after ${SECONDS} s"

# Debian tools the tests drive: tmux runs the real app in a real terminal; PostgreSQL serves the
# several-machines tests (tests/pg.py starts a throwaway server). A tool may live off PATH in the
# folders a third argument names (a glob), as PostgreSQL's server programs do.
found_tool() {
  local tool="$1" where="$2"
  command -v "$tool" >/dev/null 2>&1 && return 0
  [ -n "$where" ] && compgen -G "$where/$tool" >/dev/null
}
need_tool() {
  local tool="$1" package="$2" where="${3:-}"
  found_tool "$tool" "$where" && return 0
  echo "==> installing $package (for $tool)"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package") >/dev/null 2>&1 || true
  elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package") >/dev/null 2>&1 || true
  fi
  if ! found_tool "$tool" "$where"; then
    if [ "${CI:-}" = "true" ]; then
      echo "error: $tool is needed by the tests and could not be installed" >&2
      exit 1
    fi
    echo "warning: $tool is missing: the tests that need it are skipped" >&2
  fi
}
need_tool tmux tmux
need_tool initdb postgresql "/usr/lib/postgresql/*/bin"

# What every test process imports, compiled once here (beside the linters) rather than by four
# pytest workers at once
.venv/bin/python -c "import timm, optuna, textual, pandas, sqlalchemy, plotext, ray.tune" >/dev/null 2>&1 &
warm=$!
echo "==> ruff"
.venv/bin/ruff check engine tui_hpo tests benchmarks scripts
echo "==> import contracts (the engine never imports textual; only engine.training imports torch; the TUI never imports it)"
.venv/bin/lint-imports pyproject.toml
wait "$warm" || true
echo "==> pytest (after ${SECONDS} s)"
# Two workers more than the cores: the suite's processes wait on subprocesses, sockets, terminals
# and the disk much of the time (68% of two cores busy with two workers; on two cores, four
# workers took the suite from 853 s to 796 s against three, 2026-12-02).
export PYTEST_XDIST_AUTO_NUM_WORKERS="${PYTEST_XDIST_AUTO_NUM_WORKERS:-$(( $(nproc) + 2 ))}"
exec .venv/bin/python -m pytest --durations=15 "$@"
