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
    # Byte-compiled after pip, on every core (pip compiles on one: 50 of a fresh install's 136 s,
    # against 34 s here), where PYTHONDONTWRITEBYTECODE is set: nothing is compiled later there,
    # and every process would compile all it imports, again. Elsewhere Python writes the bytecode
    # of what is imported, as it is first imported.
    if ! .venv/bin/python -m pip install --no-compile --disable-pip-version-check -e ".${extras:+[$extras]}" \
        >"$log" 2>&1; then
      tail -n 30 "$log" >&2
      echo "error: installing the project into .venv failed (full log: $log)" >&2
      exit 1
    fi
    if [ -n "${PYTHONDONTWRITEBYTECODE:-}" ]; then
      .venv/bin/python -m compileall -q -j 0 .venv/lib/python*/site-packages >/dev/null 2>&1 || true
    fi
    touch "$stamp"
  fi
}
