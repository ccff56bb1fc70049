#!/bin/bash
# VizWiz test: converted for the EvalAI server (no local score).
# Usage: bash scripts/v1_5/eval/vizwiz.sh [METHOD] [K]   (environment: see common.sh)
source "$(dirname "$0")/common.sh"
D=$EVAL_DIR/vizwiz
need "$D/llava_test.jsonl" "$D/test"
run_loader vizwiz "$D/llava_test.jsonl" "$D/test"
UPLOAD="$D/answers_upload/$RUN.json"
mkdir -p "$(dirname "$UPLOAD")"
"$PYTHON" -m llava.eval.convert_vizwiz_for_submission --annotation-file "$D/llava_test.jsonl" \
    --result-file "$(answers_file vizwiz)" --result-upload-file "$UPLOAD"
echo "upload $UPLOAD to EvalAI (VizWiz VQA), then write {\"score\": N} to $(score_file vizwiz)"
