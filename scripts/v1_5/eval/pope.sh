#!/bin/bash
# POPE (adversarial, popular, random): F1 averaged over the splits is the headline score.
# Usage: bash scripts/v1_5/eval/pope.sh [METHOD] [K]   (environment: see common.sh)
source "$(dirname "$0")/common.sh"
D=$EVAL_DIR/pope
need "$D/llava_pope_test.jsonl" "$D/val2014" "$D/coco"
run_loader pope "$D/llava_pope_test.jsonl" "$D/val2014"
"$PYTHON" -m llava.eval.eval_pope --annotation-dir "$D/coco" --question-file "$D/llava_pope_test.jsonl" \
    --result-file "$(answers_file pope)" --score-file "$(score_file pope)"
