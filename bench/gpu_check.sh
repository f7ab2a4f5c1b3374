#!/usr/bin/env bash
# One-shot check of the GPU path on a machine with a CUDA GPU, in under 5 minutes (start-up included):
#   1. the tests marked `cuda` (they skip without a GPU): captured chains equal eager ones, training on cuda,
#   2. the quickstart recipe trained 200 steps on cuda, sampled and evaluated (NLL, reconstruction, latent),
#   3. bench/train_iteration.py for ptb, snli and yahoo: eager, captured (CUDA graphs) and bf16, with kernel
#      launches per Langevin step, each against bench/reference.py on the same GPU,
#   4. bench/generation.py,
# then one JSON and one Markdown summary (bench/gpu_summary.py) in $OUT (default bench/gpu-out).
#
#   bash bench/gpu_check.sh            # on the GPU machine, from the repository root
#
# It uses the machine's own python3 and torch (PYTHON=... to choose another) and the repository as it is
# (PYTHONPATH, nothing installed); a step that fails is recorded and the script goes on. All steps together
# get DEADLINE seconds (default 270): each step's own limit is cut to what is left, and a step with under 5 s
# left is recorded as skipped, so a hung step cannot push the whole check past its lease.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/gpu-out}
DEADLINE=${DEADLINE:-270}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
RUN=$(mktemp -d)
start=$(date +%s)
status() { echo "$1 $2" >> "$OUT/steps.txt"; }
step() {  # step NAME TIMEOUT CMD...: run, log to $OUT/NAME.log, record the exit status (124: timed out)
  local name=$1 limit=$2 left; shift 2
  left=$(( DEADLINE - ($(date +%s) - start) ))
  if (( left < 5 )); then status "$name" skipped; return; fi
  (( limit > left )) && limit=$left
  echo "== $name (up to ${limit} s)" >&2
  timeout -k 5 "$limit" "$@" > "$OUT/$name.log" 2>&1
  status "$name" $?
}
: > "$OUT/steps.txt"

$PY - > "$OUT/env.json" <<'PYEOF'
import json, platform, torch
d = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
     "cudnn": torch.backends.cudnn.version(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
print(json.dumps(d))
PYEOF

bench_preset() {  # eager, captured and bf16 training iterations of one preset against the reference
  local preset=$1 iters=$2
  step "iter-$preset-eager" 45 $PY bench/train_iteration.py --preset $preset --device cuda --iters $iters \
    --capture none --launches --json "$OUT/iter-$preset-eager.json"
  step "iter-$preset-captured" 45 $PY bench/train_iteration.py --preset $preset --device cuda --iters $iters \
    --capture cuda_graph --launches --json "$OUT/iter-$preset-captured.json"
  step "iter-$preset-bf16" 45 $PY bench/train_iteration.py --preset $preset --device cuda --iters $iters \
    --capture cuda_graph --amp bf16 --json "$OUT/iter-$preset-bf16.json"
}

# most important first, so that a short lease still measures it: the GPU tests, PTB against the reference
step tests 120 $PY -m pytest -q -m cuda tests/test_gpu_contracts.py -p no:cacheprovider
bench_preset ptb 5
step quickstart 120 $PY -m textebm train recipes/quickstart.yaml --device cuda --set train.steps=200 \
  --set train.eval_every=100 --out "$RUN/quickstart" --overwrite --no-progress
step sample 30 $PY -m textebm sample "$RUN/quickstart" -n 5 --device cuda
step eval 60 $PY -m textebm eval "$RUN/quickstart" --device cuda --nll --recon --latent --max-sentences 100 \
  --out "$OUT/quickstart-eval.json"
bench_preset snli 3
bench_preset yahoo 3
step generation 45 $PY bench/generation.py --preset ptb --device cuda --json "$OUT/generation.json"
echo "total_seconds $(( $(date +%s) - start ))" >> "$OUT/steps.txt"
$PY bench/gpu_summary.py "$OUT"
