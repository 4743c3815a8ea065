#!/usr/bin/env bash
# The device check: `make bench-gpu` on a GPU machine (a copy of this repository with .gpu/ beside it,
# made by `make bench-gpu-prep` where ../shared exists). It installs what a bare GPU image lacks
# (DeepSpeed, pydantic, hjson: wheels in .gpu/whl), then runs `cli.py bench` on the five-task NLG Word-KD
# trial at GPT-2-small shape (grids/bench/nlg5-small.yaml) within a deadline, every figure as JSON in $OUT.
# Each step is cut at its share of the deadline, so a hang costs that step only.
#   OUT=folder (default runs/bench-gpu)  CONFIG=trial or grid file  DEADLINE_S=540  STEPS=30
#   STEP_S=seconds (each step's limit instead of its share; the CPU test's slow machine)
#   PACKING=4 (paper-policy trials packed with the step graph)
#   EXTRA_TRAIN=0 (skip the compiled-blocks and gelu_new training runs that follow the main four)
#   EXTRA="--set KEY=VALUE ..." (added to every bench run)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 COLUMNS=${COLUMNS:-160} TOKENIZERS_PARALLELISM=false
OUT=${OUT:-runs/bench-gpu}
CONFIG=${CONFIG:-grids/bench/nlg5-small.yaml}
DEADLINE=$((SECONDS + ${DEADLINE_S:-540}))
STEPS=${STEPS:-30}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
LOG=$OUT/check.log
: > "$LOG"

if ! $PY -c "import deepspeed, pydantic, hjson" 2>/dev/null; then
  [ -d .gpu/whl ] || { echo "missing DeepSpeed/pydantic/hjson and no .gpu/whl to install them from (make bench-gpu-prep)" | tee -a "$LOG"; exit 2; }
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target .gpu/site .gpu/whl/*.whl || exit 2
  export PYTHONPATH=$PWD/.gpu/site:${PYTHONPATH:-}
fi
SETS=()
if [ -d .gpu/data ]; then  # the carried copies of the real data and tokenizer
  SETS+=(--set data.dir=.gpu/data --set model.tokenizer=.gpu/tok)
fi
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"

step() {  # step SECONDS NAME ARGS...: one bench run under min(SECONDS, time left), output to the log
  local want=${STEP_S:-$1} name=$2; shift 2
  local left=$((DEADLINE - SECONDS)); local t=$(( want < left ? want : left ))
  if ((t < 20)); then echo "=== SKIPPED (no time left): $name" | tee -a "$LOG"; return; fi
  echo "=== $(date +%T) [${t}s] $name" | tee -a "$LOG"
  timeout -k 5 "$t" $PY cli.py bench "$CONFIG" "${SETS[@]}" "${EXTRA_ARGS[@]}" "$@" --out "$OUT/$name.json" 2>&1 \
    | grep --line-buffered -v -e FutureWarning -e 'output = func' | tee -a "$LOG"
  echo "=== rc ${PIPESTATUS[0]} after ${SECONDS}s" | tee -a "$LOG"
}

{ command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.sm,memory.used --format=csv
  $PY -c "import torch, transformers, deepspeed; print('torch', torch.__version__, 'transformers', transformers.__version__, 'deepspeed', deepspeed.__version__)"
  nproc; } 2>&1 | grep -v WARNING | tee -a "$LOG"

# order = value: the trial's decoding (CUDA graphs, then eager for the ratio), then the training step
step 150 decode --parts decoding --profile
step 90 decode-eager --parts decoding --no-decode-graphs
step 150 train --parts training --steps "$STEPS" --profile
# the paper policy at its launch floor: the step graph's ms/step beside the eager paper step, and K
# paper-policy trials packed on the GPU with it (resources.gpu: 1/K)
step 120 train-paper-graph --parts paper --steps "$STEPS" --packing "${PACKING:-4}" \
  --set training.batch_policy=paper --set training.step_graph=true
if [ "${EXTRA_TRAIN:-1}" = 1 ]; then  # what decides two defaults (each runs only if time is left)
  step 120 train-compile --parts training --steps "$STEPS" --set training.compile=true
  step 60 train-gelu-new --parts training --steps "$STEPS" --set model.gelu=gelu_new
fi
echo "=== summary after ${SECONDS}s" | tee -a "$LOG"
$PY -m l2kd.bench.summary "$OUT"/*.json 2>&1 | grep -v WARNING | tee -a "$LOG"
