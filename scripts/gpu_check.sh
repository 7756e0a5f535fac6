#!/usr/bin/env bash
# Every GPU figure of issues 9 and 11 in one run, under 7 minutes on a CUDA machine; prints each figure.
#
#   scripts/gpu_check.sh            # on a GPU server, in the checkout, with the project installed
#
# On the lent device machine (torch, timm, pandas... preinstalled, the rest carried as wheels in
# .whl/: see benchmarks/README.md), it installs the wheels into /tmp/site first. Without a GPU it
# says so and exits 0. Output also goes to $OUT/gpu_check.log when OUT is set.
#
# 1. the platform report (`tui-hpo info`) and `tui-hpo gpu check` (per card: features, state, advice)
# 1b. the GPU toolkit: `gpu batch` (largest batch of resnet18 and efficientnet_b0 at 224 px),
#     `gpu benchmark` on the same two models (TFLOP/s, bandwidths, eager/compiled/amp/layout A/B),
#     `gpu profile` of a resnet18 run (top operators, where a step's time goes, a trace file)
# 2. the quick preset, 8 trials, default settings beside compile and packing forced off
#    (benchmarks/gpu_sweep.py: trials_per_min, gpu_busy, first_epoch_ratio)
# 3. a forced CUDA out-of-memory (memory capped with torch.cuda.set_per_process_memory_fraction):
#    the trial must step its batch down and finish
# 4. the fixed costs around the trials (benchmarks/fixed_costs.py, one cold and one warm start)
# 5. where a new model's first steps go, per precision/layout/cuDNN setting (benchmarks/first_epoch.py)
# 6. the image-folder benchmark (benchmarks/image_folder.py, a generated folder of JPEGs)
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_check: installing the carried wheels failed" >&2; exit 1; }
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
LOG="${OUT:-/tmp}/gpu_check.log"
exec > >(tee "$LOG") 2>&1

step() { echo; echo "=== $* ($(date +%T))"; }
timed() { local t0=$SECONDS; "$@"; local rc=$?; echo "--- exit $rc after $((SECONDS - t0)) s"; return $rc; }

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: torch sees no CUDA GPU here: nothing to check"
  exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

step "1. platform report"
timed "$PY" -m tui_hpo.cli info

timed "$PY" -m tui_hpo.cli gpu check

step "1b. the GPU toolkit: batch, benchmark, profile"
timed "$PY" -m tui_hpo.cli gpu batch --model resnet18,efficientnet_b0 --image-size 224
timed timeout 200 "$PY" -m tui_hpo.cli gpu benchmark --models resnet18,efficientnet_b0 --steps 20
PROF_DIR=$(mktemp -d)
cat > "$PROF_DIR/resnet18.yaml" <<'EOF'
name: resnet18
train: {model: resnet18, image_size: 224, batch_size: 256, augment: 0.3, hflip: true}
resources: {batch_multiplier: 1.0}
EOF
timed "$PY" -m tui_hpo.cli gpu profile --config "$PROF_DIR/resnet18.yaml" --workdir "$PROF_DIR/runs" --steps 10

step "2. quick 8: default settings beside compile and packing forced off"
timed "$PY" benchmarks/gpu_sweep.py --n-trials 8

step "3. forced out-of-memory: GPU memory capped, batch 512 of resnet50 at 160 px"
OOM_DIR=$(mktemp -d)
mkdir -p "$OOM_DIR/site"
# Imported by every Python process that has it on its path: the workers too.
cat > "$OOM_DIR/site/sitecustomize.py" <<'EOF'
import torch
if torch.cuda.is_available():
    torch.cuda.set_per_process_memory_fraction(float(__import__("os").environ.get("GPU_CHECK_FRACTION", "0.03")))
EOF
cat > "$OOM_DIR/oom.yaml" <<'EOF'
name: oom
train: {model: resnet50, epochs: 2, image_size: 160, batch_size: 512}
search_space: {lr: {low: 1.0e-3, high: 1.0e-2, log: true}}
budget: {n_trials: 2}
resources: {batch_multiplier: 1.0, compile: false}
EOF
PYTHONPATH="$OOM_DIR/site:$PYTHONPATH" timed "$PY" -m tui_hpo.cli run --config "$OOM_DIR/oom.yaml" \
  --workdir "$OOM_DIR/runs" --no-tui
"$PY" -m tui_hpo.cli summary --workdir "$OOM_DIR/runs" --study oom
grep -h "out of memory" "$OOM_DIR/runs/oom/engine.log" | cut -c1-200 || echo "(no out-of-memory step: raise the batch)"

step "4. fixed costs around the trials (cold and warm start)"
timed "$PY" benchmarks/fixed_costs.py --repeats 1

step "5. the first steps of a new model and shape, per setting (efficientnet_b0: the slowest first epoch)"
timed "$PY" benchmarks/first_epoch.py --models efficientnet_b0 --profile

step "6. image folder: trial 1 and trial 2 against ImageFolder + DataLoader"
if [ -f benchmarks/image_folder.py ]; then
  timed "$PY" benchmarks/image_folder.py
else
  echo "(benchmarks/image_folder.py is not in this checkout)"
fi

step "done"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader || true
