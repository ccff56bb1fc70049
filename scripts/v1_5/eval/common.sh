#!/bin/bash
# Shared by scripts/v1_5/eval/<bench>.sh: `bash scripts/v1_5/eval/<bench>.sh [METHOD] [K]`.
#
# METHOD (default none) and K pick the pruning method and visual token budget (K is required with a method;
# none runs as k576).
# Environment (all optional):
#   MODEL_PATH   checkpoint folder or HF-cache id          (default liuhaotian/llava-v1.5-7b)
#   CKPT         name used in the answer paths             (default: basename of MODEL_PATH)
#   EVAL_DIR     benchmark data root                        (default ./playground/data/eval)
#   CONV_MODE    conversation template                      (default vicuna_v1)
#   PRUNING_ARGS more pruning flags, e.g. "--erank-avg 95 --budget-scope global --pruning-stats"
#   EVAL_ARGS    more generator flags, e.g. "--device cpu --num-workers 0 --batch-size 8"
#   PYTHON       interpreter                                (default python)
#   CUDA_VISIBLE_DEVICES  GPUs for the chunked benchmarks (one chunk per GPU, as upstream)
# Answers: $EVAL_DIR/<bench>/answers/$CKPT/$RUN_NAME/k$K.jsonl (resumed if the run is repeated with the same
# settings, refused with other ones; <answers>.run.json records them); scores: the same under scores/ (.json,
# read by python -m llava.eval.summarize). RUN_NAME is METHOD, plus what else distinguishes the run:
# PRUNING_ARGS (--pruning-stats aside) and a CONV_MODE other than vicuna_v1, e.g. agile+erank-avg=11.11.
set -euo pipefail

METHOD=${1:-${METHOD:-none}}
K=${2:-${K:-}}
if [ "$METHOD" = none ]; then
    K=${K:-576}
elif [ -z "$K" ]; then
    echo "error: METHOD=$METHOD needs K, the visual tokens per image: bash $0 $METHOD 64" >&2
    exit 2
fi
MODEL_PATH=${MODEL_PATH:-liuhaotian/llava-v1.5-7b}
CKPT=${CKPT:-$(basename "$MODEL_PATH")}
EVAL_DIR=${EVAL_DIR:-./playground/data/eval}
CONV_MODE=${CONV_MODE:-vicuna_v1}
PYTHON=${PYTHON:-python}
PRUNING_ARGS=${PRUNING_ARGS:-}
EVAL_ARGS=${EVAL_ARGS:-}
# what distinguishes this run from another with the same METHOD and K, in its file names
TAG=$(printf '%s' "$PRUNING_ARGS" | sed -E 's/--pruning-stats//g; s/^ +| +$//g; s/ +/ /g; s/--([a-z-]+) /\1=/g; s/--//g; s/ /+/g; s/[^A-Za-z0-9._=+-]/-/g')
if [ "$CONV_MODE" != vicuna_v1 ]; then TAG="${TAG:+$TAG+}conv=$CONV_MODE"; fi
RUN_NAME="$METHOD${TAG:++$TAG}"
RUN="$CKPT/$RUN_NAME/k$K"

# shellcheck disable=SC2206
PRUNE=(--pruning-method "$METHOD" --visual-token-num "$K" $PRUNING_ARGS)
# shellcheck disable=SC2206
EXTRA=($EVAL_ARGS)

need() {  # need FILE...: stop with a clear message if benchmark data is missing
    for f in "$@"; do
        if [ ! -e "$f" ]; then
            echo "error: $f not found; see playground/data/eval/README.md for what to download" >&2
            exit 2
        fi
    done
}

score_file() {  # score_file BENCH: where the scorer writes its JSON
    mkdir -p "$EVAL_DIR/$1/scores/$CKPT/$RUN_NAME"
    echo "$EVAL_DIR/$1/scores/$CKPT/$RUN_NAME/k$K.json"
}

answers_file() {  # answers_file BENCH
    mkdir -p "$EVAL_DIR/$1/answers/$CKPT/$RUN_NAME"
    echo "$EVAL_DIR/$1/answers/$CKPT/$RUN_NAME/k$K.jsonl"
}

# run_chunked BENCH QUESTION_FILE IMAGE_FOLDER: model_vqa_loader once per GPU in CUDA_VISIBLE_DEVICES
# (chunk i on GPU i), then the chunks are concatenated in order into answers_file BENCH.
run_chunked() {
    local bench=$1 questions=$2 images=$3
    local gpus=${CUDA_VISIBLE_DEVICES:-0}
    IFS=',' read -ra GPULIST <<< "$gpus"
    local chunks=${#GPULIST[@]}
    local out
    out=$(answers_file "$bench")
    local dir="${out%.jsonl}"
    mkdir -p "$dir"
    local pids=()
    for idx in $(seq 0 $((chunks - 1))); do
        CUDA_VISIBLE_DEVICES=${GPULIST[$idx]} "$PYTHON" -m llava.eval.model_vqa_loader \
            --model-path "$MODEL_PATH" --question-file "$questions" --image-folder "$images" \
            --answers-file "$dir/${chunks}_${idx}.jsonl" --num-chunks "$chunks" --chunk-idx "$idx" \
            --temperature 0 --conv-mode "$CONV_MODE" "${PRUNE[@]}" "${EXTRA[@]}" &
        pids+=($!)
    done
    local failed=0
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    if [ "$failed" != 0 ]; then
        echo "error: a chunk failed; its answers so far are kept in $dir, re-run to resume" >&2
        exit 1
    fi
    : > "$out"
    for idx in $(seq 0 $((chunks - 1))); do cat "$dir/${chunks}_${idx}.jsonl" >> "$out"; done
}

# run_loader BENCH QUESTION_FILE IMAGE_FOLDER [more flags]: one process, answers_file BENCH
run_loader() {
    local bench=$1 questions=$2 images=$3
    shift 3
    "$PYTHON" -m llava.eval.model_vqa_loader --model-path "$MODEL_PATH" --question-file "$questions" \
        --image-folder "$images" --answers-file "$(answers_file "$bench")" --temperature 0 \
        --conv-mode "$CONV_MODE" "${PRUNE[@]}" "${EXTRA[@]}" "$@"
}
