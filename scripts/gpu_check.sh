#!/bin/bash
# One-shot GPU check: speed and memory of every pruning method at LLaVA-1.5-7B shapes in bf16 (random
# weights, nothing fetched), LLaVA-1.6 at one K, the selection time per method, agile against the official
# per-token loop, the tower with and without the CLS attention row, and the environment. Everything goes
# to one folder as JSON and Markdown.
#
#   bash scripts/gpu_check.sh [OUT]            # on a GPU (default OUT: gpu_check_out)
#   SMALL=1 bash scripts/gpu_check.sh [OUT]    # the same steps on the CPU at small shapes (proves the script)
#
# Sized for 8 minutes on one H200 with REPEATS=5 (an estimate, not yet measured). Runs from the repository
# root with the current Python (PYTHON=...); the package need not be installed (PYTHONPATH=.). Needs torch,
# transformers >= 5.17 and tqdm; nothing is fetched.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check_out}
PY=${PYTHON:-python}
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"

if [ "${SMALL:-0}" = 1 ]; then
    DEVICE=cpu DTYPE=float32 V15=small V16=tiny-anyres REPEATS=${REPEATS:-1} THREADS=(--threads 1)
    # the in-LLM methods' layers on the small presets' shallow LLMs (8 and 3 layers); a K that a shallow
    # LLM cannot give (pdrop's average) is skipped with its reason in the report
    V15_LAYERS=(--fastv-layer 2 --pdrop-layers 1,2,3 --sparsevlm-layers 1,3,5 --dart-layer 2)
    V16_LAYERS=(--fastv-layer 1 --pdrop-layers 1 --sparsevlm-layers 0,1 --dart-layer 1)
else
    DEVICE=cuda DTYPE=bfloat16 V15=llava-v1.5-7b V16=llava-v1.6-vicuna-7b REPEATS=${REPEATS:-5} THREADS=()
    V15_LAYERS=() V16_LAYERS=()  # the official layers (fastv 2, pdrop 2,8,16, sparsevlm 2,6,15, dart 2)
fi
# every method that prunes (the registry decides: a method added later is included), unpruned first
METHODS=$("$PY" -c "from llava.pruning import METHODS; print(','.join(['none'] + sorted(m for m in METHODS if m != 'none')))")
step() { echo "[$(date +%T)] $*" >&2; }

step "environment -> $OUT/env.txt"
{
    "$PY" -c "import platform, torch, transformers; print('python', platform.python_version()); \
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available()); \
print('transformers', transformers.__version__); \
print('device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or 'cpu')"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    echo "methods: $METHODS"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt" >&2

step "LLaVA-1.5 ($V15, $DTYPE): every method x K = 64, 128, 192 and unpruned"
"$PY" -m llava.tools.benchmark --random-weights "$V15" --dtype "$DTYPE" --device "$DEVICE" --methods "$METHODS" \
    --visual-token-num 64,128,192 --repeats "$REPEATS" --warmup 1 --prompt-tokens 64 --new-tokens 16 \
    "${V15_LAYERS[@]}" "${THREADS[@]}" --out "$OUT/llava15.json" --markdown "$OUT/llava15.md"

step "LLaVA-1.6 ($V16, $DTYPE): every method at K = 64 per view"
"$PY" -m llava.tools.benchmark --random-weights "$V16" --dtype "$DTYPE" --device "$DEVICE" --methods "$METHODS" \
    --visual-token-num 64 --repeats "$REPEATS" --warmup 1 --prompt-tokens 64 --new-tokens 16 --no-agile-loop \
    "${V16_LAYERS[@]}" "${THREADS[@]}" --out "$OUT/llava16.json" --markdown "$OUT/llava16.md"

step "selection time per method and agile against the per-token loop (N=576, D=4096, K=64)"
"$PY" -m llava.tools.bench_select --device "$DEVICE" --visual-token-num 64 --dim 4096 \
    --repeats "$((REPEATS * 4))" > "$OUT/selection.md"

step "done: $(ls "$OUT" | tr '\n' ' ')"
