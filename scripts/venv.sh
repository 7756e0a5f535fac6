# Sourced by run_experiments.sh and run_tests.sh: create .venv if missing and install the project.
# pip takes torch/torchvision from this machine's wheel cache; the pins in pyproject.toml keep it so.
ensure_venv() {
  local extras="$1"
  local python="${PYTHON:-python3}"
  if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv"
    "$python" -m venv .venv
  fi
  local stamp=".venv/.installed-${extras:-base}"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "==> installing tui-hpo${extras:+[$extras]} into .venv (first time: about a minute)"
    local log=.venv/install.log
    # pip byte-compiles what it installs (50 s of a fresh install). Not skipped (--no-compile): where
    # PYTHONDONTWRITEBYTECODE is set, as on our CI machine, nothing would be compiled later, and every
    # process would compile all it imports from source, again and again.
    if ! .venv/bin/python -m pip install --disable-pip-version-check -e ".${extras:+[$extras]}" >"$log" 2>&1; then
      tail -n 30 "$log" >&2
      echo "error: installing the project into .venv failed (full log: $log)" >&2
      exit 1
    fi
    touch "$stamp"
  fi
}
