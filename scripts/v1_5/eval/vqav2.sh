#!/bin/bash
# VQAv2 test-dev: chunked over GPUs, converted for the EvalAI server (no local score).
# Usage: bash scripts/v1_5/eval/vqav2.sh [METHOD] [K]   (environment: see common.sh)
source "$(dirname "$0")/common.sh"
D=$EVAL_DIR/vqav2
need "$D/llava_vqav2_mscoco_test-dev2015.jsonl" "$D/test2015" "$D/llava_vqav2_mscoco_test2015.jsonl"
run_chunked vqav2 "$D/llava_vqav2_mscoco_test-dev2015.jsonl" "$D/test2015"
SPLIT=llava_vqav2_mscoco_test-dev2015
# the converter's upstream layout: answers/<split>/<ckpt>/merge.jsonl -> answers_upload/<split>/<ckpt>.json
mkdir -p "$D/answers/$SPLIT/$RUN" "$(dirname "$D/answers_upload/$SPLIT/$RUN")"
cp "$(answers_file vqav2)" "$D/answers/$SPLIT/$RUN/merge.jsonl"
"$PYTHON" -m llava.eval.convert_vqav2_for_submission --dir "$D" --split "$SPLIT" --ckpt "$RUN"
echo "upload $D/answers_upload/$SPLIT/$RUN.json to EvalAI (VQAv2 test-dev), then write {\"score\": N} to $(score_file vqav2)"
