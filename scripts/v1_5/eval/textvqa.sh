#!/bin/bash
# TextVQA val (with OCR tokens in the prompt), VQA accuracy.
# Usage: bash scripts/v1_5/eval/textvqa.sh [METHOD] [K]   (environment: see common.sh)
source "$(dirname "$0")/common.sh"
D=$EVAL_DIR/textvqa
need "$D/llava_textvqa_val_v051_ocr.jsonl" "$D/train_images" "$D/TextVQA_0.5.1_val.json"
run_loader textvqa "$D/llava_textvqa_val_v051_ocr.jsonl" "$D/train_images"
"$PYTHON" -m llava.eval.eval_textvqa --annotation-file "$D/TextVQA_0.5.1_val.json" \
    --result-file "$(answers_file textvqa)" --score-file "$(score_file textvqa)"
