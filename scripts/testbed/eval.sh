#!/bin/bash
# Every pruning method x K on the testbed's simple and complex eval sets, then one table and plot
# (python -m llava.testbed.sweep runs the configurations: the testbed settings of each method are there).
#
#   bash scripts/testbed/eval.sh                       # all methods, K in 32 64 128 192, both regimes
#   METHODS="agile fastervlm mix-adaptive" KS="64" bash scripts/testbed/eval.sh   (METHOD-RULE: --complexity-rule RULE)
#
# Per regime: POPE (random/popular/adversarial, F1 averaged) + colour, counting, position, reading accuracy
# + CHAIR_s on "Describe the image." captions. Answers and scores go to $OUT/<regime>/<bench>/{answers,scores}/
# $CKPT/<method>/k<K>.* (the eval-script layout; finished runs are skipped, interrupted ones resume), and
# `python -m llava.testbed.report` writes $OUT/table.md, table.csv, relative_accuracy.png and claims.md.
# Environment: MODEL_PATH (default ./playground/llava-testbed), WORLD (eval sets; generated with seed 0 if
# missing), IMAGES (only the questions about the first IMAGES pictures of each regime; default all 100), OUT, REGIMES, METHODS, KS, BATCH (prompts per generate call), DEVICE (cpu), FASTV_LAYER (1 of the
# testbed LLM's 3 layers), ERANK_AVG (default: the checkpoint's erank_calibration.json), PYTHON, JOBS (runs in
# parallel, default 1).
set -euo pipefail
cd "$(dirname "$0")/../.."

MODEL_PATH=${MODEL_PATH:-./playground/llava-testbed}
CKPT=${CKPT:-$(basename "$MODEL_PATH")}
WORLD=${WORLD:-./playground/data/testbed/world}
OUT=${OUT:-./playground/data/testbed/results}
REGIMES=${REGIMES:-simple complex}
METHODS=${METHODS:-fastv pdrop sparsevlm sparsevlm_v2 dart fastervlm random fps divprune visionzip prumerge prumerge_plus holov fopru vispruner vispruner-adaptive vispruner-inverse mix mix-adaptive mix-inverse agile}
KS=${KS:-32 64 128 192}
BATCH=${BATCH:-16}
DEVICE=${DEVICE:-cpu}
FASTV_LAYER=${FASTV_LAYER:-1}
PYTHON=${PYTHON:-python}
JOBS=${JOBS:-1}
IMAGES=${IMAGES:-}

ERANK_AVG=${ERANK_AVG:-}                      # default: the checkpoint's erank_calibration.json

if [ ! -f "$WORLD/eval/simple/vqa/truth.jsonl" ]; then
    "$PYTHON" -m llava.testbed.generate --out "$WORLD" --seed 0 --train-images 0
fi

SETS="$WORLD/eval"
if [ -n "$IMAGES" ]; then
    SETS="$OUT/sets"
    for regime in $REGIMES; do
        "$PYTHON" -c 'import sys; from llava.testbed.generate import subset_eval as s; s(sys.argv[1], sys.argv[2], int(sys.argv[3]))' \
            "$WORLD/eval/$regime" "$SETS/$regime" "$IMAGES"
    done
fi

# the configurations in JOBS processes side by side, each reading the checkpoint once (llava.testbed.sweep)
ERANK=()
if [ -n "$ERANK_AVG" ]; then ERANK=(--erank-avg "$ERANK_AVG"); fi
for ((i = 0; i < JOBS; i++)); do
    # shellcheck disable=SC2086
    "$PYTHON" -m llava.testbed.sweep --model-path "$MODEL_PATH" --ckpt "$CKPT" --sets "$SETS" --out "$OUT" \
        --regimes $REGIMES --methods $METHODS --ks $KS --batch-size "$BATCH" --device "$DEVICE" \
        --fastv-layer "$FASTV_LAYER" "${ERANK[@]}" --shard "$i/$JOBS" &
done
status=0
for ((i = 0; i < JOBS; i++)); do wait -n || status=1; done
if [ "$status" -ne 0 ]; then echo "error: a sweep process failed (its message is above)" >&2; exit 1; fi
"$PYTHON" -m llava.testbed.report --results "$OUT" --ckpt "$CKPT" --regimes $REGIMES
