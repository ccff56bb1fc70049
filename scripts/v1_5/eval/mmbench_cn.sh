#!/bin/bash
# MMBench-CN dev: converted for the OpenCompass server (no local score).
# Usage: bash scripts/v1_5/eval/mmbench_cn.sh [METHOD] [K]   (environment: see common.sh)
source "$(dirname "$0")/common.sh"
SPLIT=${SPLIT:-mmbench_dev_cn_20231003}
D=$EVAL_DIR/mmbench_cn
need "$D/$SPLIT.tsv"
"$PYTHON" -m llava.eval.model_vqa_mmbench --model-path "$MODEL_PATH" --question-file "$D/$SPLIT.tsv" \
    --answers-file "$(answers_file mmbench_cn)" --lang cn --single-pred-prompt --temperature 0 \
    --conv-mode "$CONV_MODE" "${PRUNE[@]}" "${EXTRA[@]}"
mkdir -p "$D/answers_upload/$SPLIT/$CKPT/$METHOD"
"$PYTHON" -m llava.eval.convert_mmbench_for_submission --annotation-file "$D/$SPLIT.tsv" \
    --result-dir "$D/answers/$CKPT/$METHOD" --upload-dir "$D/answers_upload/$SPLIT/$CKPT/$METHOD" --experiment "k$K"
echo "upload $D/answers_upload/$SPLIT/$CKPT/$METHOD/k$K.xlsx to OpenCompass, then write {\"score\": N} to $(score_file mmbench_cn)"
