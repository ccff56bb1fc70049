#!/bin/bash
# MME: answers converted to the official layout, perception and cognition totals.
# Usage: bash scripts/v1_5/eval/mme.sh [METHOD] [K]   (environment: see common.sh)
# The score is perception + cognition (the AgilePruner 7B table); MME_HEADLINE=perception for the 13B/NeXT tables.
source "$(dirname "$0")/common.sh"
D=$EVAL_DIR/MME
need "$D/llava_mme.jsonl" "$D/MME_Benchmark_release_version"
run_loader MME "$D/llava_mme.jsonl" "$D/MME_Benchmark_release_version"
"$PYTHON" -m llava.eval.eval_mme --answers-file "$(answers_file MME)" --data-path "$D/MME_Benchmark_release_version" \
    --score-file "$(score_file MME)" --headline "${MME_HEADLINE:-total}"
