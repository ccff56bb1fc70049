#!/bin/bash
# ScienceQA test (IMG accuracy is the headline score).
# Usage: bash scripts/v1_5/eval/sqa.sh [METHOD] [K]   (environment: see common.sh)
source "$(dirname "$0")/common.sh"
D=$EVAL_DIR/scienceqa
need "$D/llava_test_CQM-A.json" "$D/images/test" "$D/pid_splits.json" "$D/problems.json"
"$PYTHON" -m llava.eval.model_vqa_science --model-path "$MODEL_PATH" --question-file "$D/llava_test_CQM-A.json" \
    --image-folder "$D/images/test" --answers-file "$(answers_file scienceqa)" --single-pred-prompt \
    --temperature 0 --conv-mode "$CONV_MODE" "${PRUNE[@]}" "${EXTRA[@]}"
OUT="$D/results/$RUN"
mkdir -p "$(dirname "$OUT")"
"$PYTHON" -m llava.eval.eval_science_qa --base-dir "$D" --result-file "$(answers_file scienceqa)" \
    --output-file "${OUT}_output.jsonl" --output-result "${OUT}_result.json" --score-file "$(score_file scienceqa)"
