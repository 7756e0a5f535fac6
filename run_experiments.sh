#!/usr/bin/env bash
# tui-hpo: the main job. Modes, as the original script had them:
#   ./run_experiments.sh              interactive: the app (system, wizard, dashboard, ...)
#   ./run_experiments.sh quick [N]    quick preset, N trials (default 20), watched in the app
#   ./run_experiments.sh full [N]     full preset, N trials (default 50), watched in the app
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
  quick|full)
    shift
    n=""
    if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then n="$1"; shift; fi
    [ -n "$n" ] || { [ "$mode" = quick ] && n=20 || n=50; }
    exec "$cli" run --preset "$mode" --n-trials "$n" "$@"
    ;;
  "")
    if [ -t 0 ] && [ -t 1 ]; then
      exec "$cli"
    fi
    exec "$cli" run --preset quick --no-tui  # no terminal: the quick preset, headless
    ;;
  -h|--help)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    exec "$cli" run "$@"
    ;;
esac
