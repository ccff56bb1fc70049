#!/bin/bash
# SEED-Bench (image accuracy is the headline score): chunked over GPUs.
# Usage: bash scripts/v1_5/eval/seed.sh [METHOD] [K]   (environment: see common.sh)
source "$(dirname "$0")/common.sh"
D=$EVAL_DIR/seed_bench
need "$D/llava-seed-bench.jsonl" "$D/SEED-Bench.json"
run_chunked seed_bench "$D/llava-seed-bench.jsonl" "$D"
UPLOAD="$D/answers_upload/$RUN.jsonl"
mkdir -p "$(dirname "$UPLOAD")"
"$PYTHON" -m llava.eval.convert_seed_for_submission --annotation-file "$D/SEED-Bench.json" \
    --result-file "$(answers_file seed_bench)" --result-upload-file "$UPLOAD" --score-file "$(score_file seed_bench)"
