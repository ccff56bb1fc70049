#!/bin/bash
# MM-Vet: answers converted for the official GPT-4 grader.
# Usage: bash scripts/v1_5/eval/mmvet.sh [METHOD] [K]   (environment: see common.sh)
source "$(dirname "$0")/common.sh"
D=$EVAL_DIR/mm-vet
need "$D/llava-mm-vet.jsonl" "$D/images"
"$PYTHON" -m llava.eval.model_vqa --model-path "$MODEL_PATH" --question-file "$D/llava-mm-vet.jsonl" \
    --image-folder "$D/images" --answers-file "$(answers_file mm-vet)" --temperature 0 \
    --conv-mode "$CONV_MODE" "${PRUNE[@]}" "${EXTRA[@]}"
RESULT="$D/results/$RUN.json"
mkdir -p "$(dirname "$RESULT")"
"$PYTHON" -m llava.eval.convert_mmvet_for_eval --src "$(answers_file mm-vet)" --dst "$RESULT"
echo "grade $RESULT with the official MM-Vet evaluator, then write {\"score\": N} to $(score_file mm-vet)"
