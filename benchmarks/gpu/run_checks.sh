#!/usr/bin/env bash
# The one command of a GPU check run (benchmarks/gpu/README.md). Run in the repo root on the device, after
# benchmarks/gpu/prepare.sh here and with `.gpu` carried:
#
#   OUT=/some/dir bash benchmarks/gpu/run_checks.sh           # the real sizes (CUDA required), <= ~6 min on an H200
#   OUT="$(mktemp -d)" SMALL=1 GPU_WHL_DIR=.gpu/whl311 bash benchmarks/gpu/run_checks.sh   # tiny sizes, on CPU
#
# Installs .gpu/whl into $GPU_SITE, puts the import stubs (.gpu/stubs) last on PYTHONPATH, and runs the checks in
# priority order, each under its own timeout (and a total budget, GPU_CHECKS_BUDGET_S), none stopping the next:
#   1. entropy precision / cost (bench_entropy.py)                        -> $OUT/1_entropy.json
#   2. loss benchmarks, float32 (bench_losses.py, bench_egspo_losses.py)  -> $OUT/2_losses.json
#   3. step threshold at 1024 x 16384, float32 and bf16 (bench_threshold.py) -> $OUT/3_threshold.json
#   4. update-step overhead (bench_update_step.py)                        -> $OUT/4_update_step.json
#   2b. the loss benchmarks again with bf16 log-probs                     -> added to $OUT/2_losses.json
# plus $OUT/0_env.json (versions, GPU) and $OUT/checks.log (everything printed). Six files in all.
set -uo pipefail

OUT="${OUT:?set OUT to the folder the results go to}"
SMALL="${SMALL:-0}"
[[ "${1:-}" == "--small" ]] && SMALL=1
WHL_DIR="${GPU_WHL_DIR:-.gpu/whl}"
SITE="${GPU_SITE:-/tmp/site}"
BUDGET="${GPU_CHECKS_BUDGET_S:-345}"  # seconds for everything; each check gets min(its timeout, what is left)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
mkdir -p "$OUT"
SCRATCH="$(mktemp -d)"
exec > >(tee -a "$OUT/checks.log") 2>&1

echo "== run_checks.sh SMALL=$SMALL budget ${BUDGET}s, repo $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
command -v nvidia-smi > /dev/null && nvidia-smi | tail -n +2  # without its first line, the date and time

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHL_DIR"/*.whl \
  || { echo "FATAL: could not install the wheels of $WHL_DIR (run benchmarks/gpu/prepare.sh, carry .gpu)"; exit 1; }
export PYTHONPATH="$SITE:$ROOT:$ROOT/.gpu/stubs${PYTHONPATH:+:$PYTHONPATH}"
export VERL_USE_EXTERNAL_PLUGINS=none  # verl_espo is not pip-installed there: the scripts import its losses
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONWARNINGS="ignore::UserWarning"  # veRL's "engine is not available" warnings

# Versions, the device, and which packages are stand-ins; stops here if the real run has no GPU.
SMALL="$SMALL" python3 - "$OUT/0_env.json" <<'PY' || { echo "FATAL: environment check failed"; exit 1; }
import json, os, sys, importlib.metadata as md
import torch, transformers
import verl, verl_espo.losses  # noqa: F401
from verl.trainer.ppo.core_algos import get_policy_loss_fn
env = {
    "python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
    "transformers": transformers.__version__, "verl": verl.__version__,
    "tensordict": md.version("tensordict"), "omegaconf": md.version("omegaconf"),
    "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    "gpu_memory_gb": torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else None,
    "stubbed": sorted(n for n, m in sys.modules.items() if "." not in n and getattr(m, "STUB", False) is True),
    "losses": {n: get_policy_loss_fn(n).__module__ for n in ("vanilla", "gspo", "espo", "egspo", "chord")},
}
print(json.dumps(env, indent=1))
json.dump(env, open(sys.argv[1], "w"), indent=1)
if os.environ["SMALL"] != "1" and not torch.cuda.is_available():
    sys.exit("no CUDA device: run with SMALL=1 for the CPU simulation")
PY

FAILED=()
run_check() {  # run_check NAME TIMEOUT_S COMMAND...: never aborts the script
  local name="$1" limit="$2"; shift 2
  local left=$((BUDGET - SECONDS - 5))
  (( left < limit )) && limit=$left
  if (( limit < 15 )); then
    echo "== SKIPPED $name: ${left}s left of the ${BUDGET}s budget"; FAILED+=("$name(skipped)"); return
  fi
  echo "== $name (timeout ${limit}s, t=${SECONDS}s): $*"
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  echo "== $name: rc=$rc in $((SECONDS - start))s"
  (( rc != 0 )) && FAILED+=("$name(rc=$rc)")
}
merge() {  # merge OUT_JSON SCRATCH_JSON...: {file stem: content} of those that exist
  python3 - "$@" <<'PY'
import json, os, sys
merged = {os.path.basename(p)[:-5]: json.load(open(p)) for p in sys.argv[2:] if os.path.exists(p)}
json.dump(merged, open(sys.argv[1], "w"), indent=1)
PY
}

if [[ "$SMALL" == 1 ]]; then
  E=(--rows 64 --repeats 1)
  L=(--rows 16 --tokens 256 --repeats 2 --warmup 1)
  T=(--rows 16 --tokens 1024 --repeats 1)
  U=(--layers 2 --hidden 64 --vocab 4096 --rows 2 --tokens 128 --prompt-tokens 32 --repeats 2)
  TE=300; TL=300; TT=120; TU=600
else
  E=(--rows 16384 --repeats 3 --compile)
  L=()
  T=()
  U=(--rows 8 --tokens 2048 --prompt-tokens 512 --repeats 5)
  TE=100; TL=40; TT=35; TU=120
fi

B=benchmarks
run_check 1_entropy "$TE" python3 $B/bench_entropy.py "${E[@]}" --json "$OUT/1_entropy.json"

losses() {  # losses DTYPE: both loss benchmarks, then 2_losses.json from all runs so far
  run_check "2_losses_$1" "$TL" python3 $B/bench_losses.py "${L[@]}" --dtype "$1" --json "$SCRATCH/losses_$1.json"
  run_check "2_egspo_$1" "$TL" python3 $B/bench_egspo_losses.py "${L[@]}" --dtype "$1" --json "$SCRATCH/egspo_$1.json"
  merge "$OUT/2_losses.json" "$SCRATCH"/losses_float32.json "$SCRATCH"/egspo_float32.json \
    "$SCRATCH"/losses_bfloat16.json "$SCRATCH"/egspo_bfloat16.json
}
losses float32

for dtype in float32 bfloat16; do
  run_check "3_threshold_$dtype" "$TT" python3 $B/bench_threshold.py "${T[@]}" --dtype $dtype \
    --json "$SCRATCH/threshold_$dtype.json"
done
merge "$OUT/3_threshold.json" "$SCRATCH"/threshold_float32.json "$SCRATCH"/threshold_bfloat16.json

run_check 4_update_step "$TU" python3 $B/bench_update_step.py "${U[@]}" --json "$OUT/4_update_step.json"

losses bfloat16  # last: the least needed figure (bf16 log-probs into the losses)

rm -rf "$SCRATCH"
echo "== done in ${SECONDS}s; failed or skipped: ${FAILED[*]:-none}"
ls -l "$OUT"
