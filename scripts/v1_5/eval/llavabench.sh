#!/bin/bash
# LLaVA-Bench (in the wild): answers; the GPT-4 review needs an OpenAI key and runs separately.
# Usage: bash scripts/v1_5/eval/llavabench.sh [METHOD] [K]   (environment: see common.sh)
source "$(dirname "$0")/common.sh"
D=$EVAL_DIR/llava-bench-in-the-wild
need "$D/questions.jsonl" "$D/images"
"$PYTHON" -m llava.eval.model_vqa --model-path "$MODEL_PATH" --question-file "$D/questions.jsonl" \
    --image-folder "$D/images" --answers-file "$(answers_file llava-bench-in-the-wild)" --temperature 0 \
    --conv-mode "$CONV_MODE" "${PRUNE[@]}" "${EXTRA[@]}"
echo "answers: $(answers_file llava-bench-in-the-wild); the GPT-4 review (upstream eval_gpt_review_bench.py with"
echo "context.jsonl, rule.json and answers_gpt4.jsonl) needs network access and an OpenAI key: run it elsewhere."
