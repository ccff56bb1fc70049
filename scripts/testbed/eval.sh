#!/bin/bash
# Every pruning method x K on the testbed's simple and complex eval sets, then one table and plot.
#
#   bash scripts/testbed/eval.sh                       # all methods, K in 32 64 128 192, both regimes
#   METHODS="agile fastervlm" KS="64" bash scripts/testbed/eval.sh
#
# Per regime: POPE (random/popular/adversarial, F1 averaged) + colour, counting, position, reading accuracy
# + CHAIR_s on "Describe the image." captions. Answers and scores go to $OUT/<regime>/<bench>/{answers,scores}/
# $CKPT/<method>/k<K>.* (the eval-script layout; finished runs are skipped, interrupted ones resume), and
# `python -m llava.testbed.report` writes $OUT/table.md, $OUT/table.csv and $OUT/relative_accuracy.png.
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
METHODS=${METHODS:-fastv pdrop sparsevlm sparsevlm_v2 dart fastervlm random fps divprune visionzip prumerge prumerge_plus holov fopru vispruner mix agile}
KS=${KS:-32 64 128 192}
BATCH=${BATCH:-16}
DEVICE=${DEVICE:-cpu}
FASTV_LAYER=${FASTV_LAYER:-1}
PYTHON=${PYTHON:-python}
JOBS=${JOBS:-1}
IMAGES=${IMAGES:-}

ERANK_AVG=${ERANK_AVG:-$("$PYTHON" -c 'import sys; from llava.testbed import calibrated_erank_avg as e; print(e(sys.argv[1]))' "$MODEL_PATH")}

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

# run_one REGIME METHOD K: answers + scores of one configuration (skipped when its scores exist)
run_one() {
    local regime=$1 method=$2 k=$3
    local data="$SETS/$regime" res="$OUT/$regime" run="$CKPT/$method/k$k"
    if [ -f "$res/chair/scores/$run.json" ] && [ -f "$res/pope/scores/$run.json" ] \
            && [ -f "$res/counting/scores/$run.json" ]; then
        return 0
    fi
    local prune=(--pruning-method "$method" --pruning-stats)
    local batch=$BATCH
    case $method in  # the testbed LLM has 3 decoder layers: the in-LLM methods act before layers 1-2
        fastv) prune+=(--visual-token-num "$k" --fastv-layer "$FASTV_LAYER") ;;
        dart) prune+=(--visual-token-num "$k" --dart-layer 1) ;;
        # pdrop: K is an average over the decoder layers, which 3 layers (the first at all 576 tokens) cannot
        # reach below 192; here lambda = sqrt(K/576) makes its last stage (layer 2) keep K tokens
        pdrop) prune+=(--pdrop-layers 1,2 --pdrop-ratio "$("$PYTHON" -c "print(round(($k / 576) ** 0.5, 6))")") ;;
        # sparsevlm: the official per-stage tables (K in 64, 96, 128, 192), first two stages, after layers 0 and 1
        sparsevlm|sparsevlm_v2) prune+=(--visual-token-num "$k" --sparsevlm-layers 0,1) ;;
        agile|mix|vispruner) prune+=(--visual-token-num "$k" --erank-avg "$ERANK_AVG") ;;
        *) prune+=(--visual-token-num "$k") ;;
    esac
    local gen=(--model-path "$MODEL_PATH" --device "$DEVICE" --batch-size "$batch" --num-workers 0 --temperature 0)
    mkdir -p "$res"/{pope,vqa,chair}/answers/"$CKPT/$method"
    "$PYTHON" -m llava.eval.model_vqa_loader "${gen[@]}" "${prune[@]}" --max-new-tokens 8 \
        --question-file "$data/pope/llava_pope_test.jsonl" --image-folder "$data/images" \
        --answers-file "$res/pope/answers/$run.jsonl"
    mkdir -p "$res/pope/scores/$CKPT/$method"
    "$PYTHON" -m llava.eval.eval_pope --annotation-dir "$data/pope/coco" \
        --question-file "$data/pope/llava_pope_test.jsonl" --result-file "$res/pope/answers/$run.jsonl" \
        --score-file "$res/pope/scores/$run.json" > /dev/null
    "$PYTHON" -m llava.eval.model_vqa_loader "${gen[@]}" "${prune[@]}" --max-new-tokens 8 \
        --question-file "$data/vqa/questions.jsonl" --image-folder "$data/images" \
        --answers-file "$res/vqa/answers/$run.jsonl"
    "$PYTHON" -m llava.testbed.score vqa --truth "$data/vqa/truth.jsonl" --result-file "$res/vqa/answers/$run.jsonl" \
        --score-dir "$res" --ckpt "$CKPT" --pruning-method "$method" --visual-token-num "$k" > /dev/null
    "$PYTHON" -m llava.eval.model_caption "${gen[@]}" "${prune[@]}" --max-new-tokens 64 \
        --question-file "$data/chair/questions.jsonl" --image-folder "$data/images" \
        --answers-file "$res/chair/answers/$run.jsonl"
    "$PYTHON" -m llava.testbed.score chair --objects "$data/chair/objects.json" \
        --cap-file "$res/chair/answers/$run.jsonl" --score-dir "$res" --ckpt "$CKPT" --pruning-method "$method" \
        --visual-token-num "$k" > /dev/null
    echo "done: $regime $method K=$k"
}

CONFIGS=()
for regime in $REGIMES; do
    CONFIGS+=("$regime none 576")
    for method in $METHODS; do
        for k in $KS; do
            case "$method:$k" in  # sparsevlm's budgets are the official tables: K in 64, 96, 128, 192 only
                sparsevlm*:64|sparsevlm*:96|sparsevlm*:128|sparsevlm*:192|[!s]*|s[!p]*) CONFIGS+=("$regime $method $k") ;;
                *) echo "skip: $method has no official budget table for K=$k" >&2 ;;
            esac
        done
    done
done
running=0
for config in "${CONFIGS[@]}"; do
    # shellcheck disable=SC2086
    run_one $config &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
done
wait
"$PYTHON" -m llava.testbed.report --results "$OUT" --ckpt "$CKPT" --regimes $REGIMES
