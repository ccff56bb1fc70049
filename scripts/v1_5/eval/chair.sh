#!/bin/bash
# CHAIR hallucination on COCO val2014 captions (CHAIR_s is the headline; lower is better).
# Usage: bash scripts/v1_5/eval/chair.sh [METHOD] [K]   (environment: see common.sh)
source "$(dirname "$0")/common.sh"
D=$EVAL_DIR/chair
need "$D/val2014" "$D/annotations/instances_val2014.json"
QUESTIONS=${CHAIR_QUESTIONS:-$D/llava_chair_val2014.jsonl}
if [ ! -e "$QUESTIONS" ]; then  # 500 images drawn with seed 0, as the CHAIR papers do
    "$PYTHON" -m llava.eval.model_caption --make-questions "$QUESTIONS" \
        --annotation-file "$D/annotations/instances_val2014.json" --image-folder "$D/val2014" --num-images 500
fi
"$PYTHON" -m llava.eval.model_caption --model-path "$MODEL_PATH" --question-file "$QUESTIONS" \
    --image-folder "$D/val2014" --answers-file "$(answers_file chair)" --temperature 0 \
    --conv-mode "$CONV_MODE" "${PRUNE[@]}" "${EXTRA[@]}"
"$PYTHON" -m llava.eval.chair --cap-file "$(answers_file chair)" \
    --annotation-file "$D/annotations/instances_val2014.json" --out "$(score_file chair)"
