#!/bin/bash
# One method over the paper's benchmark set (VQAv2, GQA, VizWiz, SQA-IMG, TextVQA, POPE, MME, MMBench,
# MMBench-CN), then the summary table. Usage: bash scripts/v1_5/eval/all.sh [METHOD] [K]
# BENCHES overrides the set, e.g. BENCHES="pope textvqa mme chair". Environment: see common.sh.
set -euo pipefail
HERE=$(dirname "$0")
BENCHES=${BENCHES:-"vqav2 gqa vizwiz sqa textvqa pope mme mmbench mmbench_cn"}
for bench in $BENCHES; do
    echo "== $bench ${1:-none} k${2:-576}"
    bash "$HERE/$bench.sh" "$@"
done
MODEL_PATH=${MODEL_PATH:-liuhaotian/llava-v1.5-7b}
"${PYTHON:-python}" -m llava.eval.summarize --eval-dir "${EVAL_DIR:-./playground/data/eval}" \
    --ckpt "${CKPT:-$(basename "$MODEL_PATH")}"
