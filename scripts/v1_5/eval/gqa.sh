#!/bin/bash
# GQA testdev-balanced: chunked over GPUs, converted, scored by exact-match accuracy.
# Usage: bash scripts/v1_5/eval/gqa.sh [METHOD] [K]   (environment: see common.sh)
source "$(dirname "$0")/common.sh"
D=$EVAL_DIR/gqa
need "$D/llava_gqa_testdev_balanced.jsonl" "$D/data/images" "$D/data/testdev_balanced_questions.json"
run_chunked gqa "$D/llava_gqa_testdev_balanced.jsonl" "$D/data/images"
PRED="$D/predictions/$RUN.json"
mkdir -p "$(dirname "$PRED")"
"$PYTHON" -m llava.eval.convert_gqa_for_eval --src "$(answers_file gqa)" --dst "$PRED"
"$PYTHON" -m llava.eval.eval_gqa --questions "$D/data/testdev_balanced_questions.json" --predictions "$PRED" \
    --score-file "$(score_file gqa)"
