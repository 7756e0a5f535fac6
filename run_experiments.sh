#!/usr/bin/env bash
# tui-hpo: the main job. Modes, as the original script had them:
#   ./run_experiments.sh              interactive: the app (system, wizard, dashboard, ...)
#   ./run_experiments.sh quick [N]    quick preset, N trials (default 20), watched in the app
#   ./run_experiments.sh full [N]     full preset, N trials (default 50), watched in the app
#   ./run_experiments.sh compare [N]  model comparison over seeds (default 9); any preset name works
#   ./run_experiments.sh info         platform report
# Any other arguments pass through to `tui-hpo run`, e.g. --no-tui --data DIR --workdir DIR.
# Headless (--no-tui, or output not a terminal): progress bar or one line per trial, for nohup/SLURM.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
ensure_venv ""
cli=.venv/bin/tui-hpo

mode="${1:-}"
case "$mode" in
  info)
    shift
    exec "$cli" info "$@"
    ;;
  "")
    if [ -t 0 ] && [ -t 1 ]; then
      exec "$cli"
    fi
    exec "$cli" run --preset quick --no-tui  # no terminal: the quick preset, headless
    ;;
  -h|--help)
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  -*) ;;
  *)
    if [ -f "configs/presets/$mode.yaml" ]; then  # a preset: quick, full, compare, ...
      shift
      n=()
      if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then n=(--n-trials "$1"); shift; fi
      exec "$cli" run --preset "$mode" "${n[@]}" "$@"  # without N: the preset's own budget
    fi
    ;;
esac
exec "$cli" run "$@"
