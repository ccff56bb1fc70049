#!/bin/bash
# Train llava-testbed from nothing, with the project's own code and recipes, reproducibly from SEED:
#   1. the shapes world (llava.testbed.generate)      2. the tiny CLIP tower (llava.testbed.tower)
#   3. a small LLaMA base (llava.testbed.base; random, or trained BASE_TEXT_STEPS steps on text)
#   4. stage 1: scripts/v1_5/pretrain.sh (projector only)
#   5. stage 2: scripts/v1_5/finetune.sh (LLM + projector, upstream-style instructions with captions)
#   6. stage 3: scripts/v1_5/finetune_task.sh on short-answer questions only (train/qa.json)
#   7. llava.testbed.ship -> OUT (tower inside)
#   8. llava.tools.calibrate -> OUT/erank_calibration.json (the --erank-avg for agile and mix)
#
#   bash scripts/testbed/train.sh [OUT]          (default OUT: ./checkpoints/llava-testbed)
#
# The defaults are the configuration of the committed playground/llava-testbed (2-core CPU, no DeepSpeed).
# A world, tower or stage output already in WORK is reused (its time is then recorded as null); delete WORK
# to start over.
# On a GPU: DEVICE=cuda (bf16, one process; LAUNCHER=deepspeed DEEPSPEED_CONFIG=./scripts/zero2.json also works).
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT=${1:-./checkpoints/llava-testbed}
WORK=${WORK:-./playground/data/testbed}       # world, tower, base and stage outputs
PY=${PY:-python}
SEED=${SEED:-0}
TRAIN_IMAGES=${TRAIN_IMAGES:-12000}
EVAL_IMAGES=${EVAL_IMAGES:-100}
CAPTION_SHARE=${CAPTION_SHARE:-0.1}          # stage-3 conversations with a "Describe the image." turn
WHERE_SHARE=${WHERE_SHARE:-0}                # stage-2/3 conversations with a grounding turn (0: none, as committed)
SENTENCE_SHARE=${SENTENCE_SHARE:-0.5}        # stage-2 colour turns answered "The star is red." (0: short answers only)
PAIR_SHARE=${PAIR_SHARE:-1}                  # stage-3 conversations asked the colour of both objects of a pair (0: none)
STAGE2_PAIR_SHARE=${STAGE2_PAIR_SHARE:-0}    # the same in stage 2, answered with sentences (0: none, as committed; tried, see README)
TOWER_STEPS=${TOWER_STEPS:-4000}
TOWER_WIDTH=${TOWER_WIDTH:-64}
TOWER_LAYERS=${TOWER_LAYERS:-4}
TOWER_ATTN_WEIGHT=${TOWER_ATTN_WEIGHT:-3.0}  # CLS-attention target loss (issue 13); 0 gives the earlier tower
TOWER_ATTN_SIGMA=${TOWER_ATTN_SIGMA:-1.0}
TOWER_ATTN_FLOOR=${TOWER_ATTN_FLOOR:-0.15}
TOWER_WHERE_WEIGHT=${TOWER_WHERE_WEIGHT:-0}   # patch tokens told their row and column (0: the committed tower)
TOWER_WHERE_CODE=${TOWER_WHERE_CODE:-onehot}  # ... as a 24-way choice (onehot) or 23 boundary bits (ordinal)
LLM_HIDDEN=${LLM_HIDDEN:-128}
LLM_LAYERS=${LLM_LAYERS:-3}
BASE_TEXT_STEPS=${BASE_TEXT_STEPS:-0}        # text-only colour conversations for the base LLM (0: random, as committed)
STAGE1_STEPS=${STAGE1_STEPS:-200}
STAGE2_STEPS=${STAGE2_STEPS:-1800}
BATCH=${BATCH:-16}
STAGE1_LR=${STAGE1_LR:-1e-3}
STAGE2_LR=${STAGE2_LR:-1e-3}                 # a randomly initialised LLM: not Vicuna's 2e-5
STAGE3_STEPS=${STAGE3_STEPS:-1200}
STAGE3_LR=${STAGE3_LR:-1e-3}
DEVICE=${DEVICE:-cpu}

TOWER="$WORK/clip-vit-testbed-patch14-336"
TIMINGS="$WORK/timings.json"
if [ "$DEVICE" = cpu ]; then
    HW=(--use_cpu True --bf16 False --tf32 False)
else
    HW=(--bf16 True --tf32 True)
fi
COMMON=(--per_device_train_batch_size "$BATCH" --gradient_accumulation_steps 1 --model_max_length 1024
        --gradient_checkpointing False --dataloader_num_workers 1 --save_strategy no --logging_steps 25
        --seed "$SEED" --data_seed "$SEED" --disable_tqdm True "${HW[@]}")
export LAUNCHER=${LAUNCHER:-$PY} DEEPSPEED_CONFIG=${DEEPSPEED_CONFIG-} REPORT_TO=${REPORT_TO:-none}

now() { date +%s; }
WORLD_S=null TOWER_S=null BASE_S=null STAGE1_S=null STAGE2_S=null
t0=$(now)
if [ ! -f "$WORK/world/world.json" ]; then
    $PY -m llava.testbed.generate --out "$WORK/world" --seed "$SEED" --train-images "$TRAIN_IMAGES" \
        --eval-images "$EVAL_IMAGES" --caption-share "$CAPTION_SHARE" --where-share "$WHERE_SHARE" \
        --sentence-share "$SENTENCE_SHARE" --pair-share "$PAIR_SHARE" \
        --stage2-pair-share "$STAGE2_PAIR_SHARE"
    WORLD_S=$(($(now) - t0))
fi
t1=$(now)
if [ ! -f "$TOWER/config.json" ]; then
    $PY -m llava.testbed.tower --out "$TOWER" --steps "$TOWER_STEPS" --batch-size "$BATCH" \
        --width "$TOWER_WIDTH" --layers "$TOWER_LAYERS" --seed "$SEED" --attn-weight "$TOWER_ATTN_WEIGHT" \
        --attn-sigma "$TOWER_ATTN_SIGMA" --attn-floor "$TOWER_ATTN_FLOOR" --where-weight "$TOWER_WHERE_WEIGHT" \
        --where-code "$TOWER_WHERE_CODE"
    TOWER_S=$(($(now) - t1))
fi
t2=$(now)
if [ ! -f "$WORK/llava-testbed-pretrain/mm_projector.bin" ]; then
    $PY -m llava.testbed.base --out "$WORK/base" --hidden "$LLM_HIDDEN" --layers "$LLM_LAYERS" --seed "$SEED" \
        --text-steps "$BASE_TEXT_STEPS"
    BASE_S=$(($(now) - t2))
    t2=$(now)
    MODEL="$WORK/base" VISION_TOWER="$TOWER" DATA_PATH="$WORK/world/train/pretrain.json" \
    IMAGE_FOLDER="$WORK/world/train/images" OUTPUT_DIR="$WORK/llava-testbed-pretrain" \
        bash scripts/v1_5/pretrain.sh "${COMMON[@]}" --max_steps "$STAGE1_STEPS" --learning_rate "$STAGE1_LR"
    STAGE1_S=$(($(now) - t2))
fi
t3=$(now)
if [ ! -f "$WORK/llava-testbed-finetune/config.json" ]; then
    MODEL="$WORK/base" VISION_TOWER="$TOWER" DATA_PATH="$WORK/world/train/finetune.json" \
    IMAGE_FOLDER="$WORK/world/train/images" PRETRAIN_MM_MLP_ADAPTER="$WORK/llava-testbed-pretrain/mm_projector.bin" \
    OUTPUT_DIR="$WORK/llava-testbed-finetune" \
        bash scripts/v1_5/finetune.sh "${COMMON[@]}" --max_steps "$STAGE2_STEPS" --learning_rate "$STAGE2_LR"
    STAGE2_S=$(($(now) - t3))
fi
t4=$(now)
MODEL="$WORK/llava-testbed-finetune" VISION_TOWER="$TOWER" DATA_PATH="$WORK/world/train/qa.json" \
IMAGE_FOLDER="$WORK/world/train/images" OUTPUT_DIR="$WORK/llava-testbed-qa" \
    bash scripts/v1_5/finetune_task.sh "${COMMON[@]}" --max_steps "$STAGE3_STEPS" --learning_rate "$STAGE3_LR"
t5=$(now)
cat > "$TIMINGS" <<JSON
{"seed": $SEED, "device": "$DEVICE", "train_images": $TRAIN_IMAGES, "batch_size": $BATCH,
 "tower": {"steps": $TOWER_STEPS, "width": $TOWER_WIDTH, "layers": $TOWER_LAYERS,
           "attn_weight": $TOWER_ATTN_WEIGHT, "attn_sigma": $TOWER_ATTN_SIGMA, "attn_floor": $TOWER_ATTN_FLOOR,
           "where_weight": $TOWER_WHERE_WEIGHT, "where_code": "$TOWER_WHERE_CODE"},
 "llm": {"hidden": $LLM_HIDDEN, "layers": $LLM_LAYERS, "text_steps": $BASE_TEXT_STEPS},
 "stage1": {"steps": $STAGE1_STEPS, "learning_rate": $STAGE1_LR},
 "stage2": {"steps": $STAGE2_STEPS, "learning_rate": $STAGE2_LR, "sentence_share": $SENTENCE_SHARE,
            "pair_share": $STAGE2_PAIR_SHARE},
 "stage3": {"steps": $STAGE3_STEPS, "learning_rate": $STAGE3_LR, "caption_share": $CAPTION_SHARE,
            "where_share": $WHERE_SHARE, "pair_share": $PAIR_SHARE},
 "wall_seconds": {"world": $WORLD_S, "tower": $TOWER_S, "base": $BASE_S, "stage1": $STAGE1_S, "stage2": $STAGE2_S,
                  "stage3": $((t5 - t4))}}
JSON
$PY -m llava.testbed.ship --model "$WORK/llava-testbed-qa" --tower "$TOWER" --out "$OUT" --timings "$TIMINGS"
$PY -m llava.tools.calibrate --model-path "$OUT" --image-folder "$WORK/world/train/images" --max-images 400 \
    --device "$([ "$DEVICE" = cpu ] && echo cpu || echo cuda)" --out "$OUT/erank_calibration.json"
