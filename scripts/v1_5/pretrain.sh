#!/bin/bash
# LLaVA-1.5 stage 1: train the projector only (plain template, LCS-558K), DeepSpeed ZeRO-2.
# Every path is a variable with a default; pruning: METHOD=agile K=64 bash scripts/v1_5/pretrain.sh
# Extra arguments are passed on to llava/train/train_mem.py (e.g. --per_device_train_batch_size 16).
set -euo pipefail

MODEL=${MODEL:-lmsys/vicuna-13b-v1.5}
VISION_TOWER=${VISION_TOWER:-openai/clip-vit-large-patch14-336}
DATA_PATH=${DATA_PATH:-./playground/data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json}
IMAGE_FOLDER=${IMAGE_FOLDER:-./playground/data/LLaVA-Pretrain/images}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/llava-v1.5-13b-pretrain}
DEEPSPEED_CONFIG=${DEEPSPEED_CONFIG-./scripts/zero2.json}
source "$(dirname "$0")/train_common.sh"   # LAUNCHER, REPORT_TO, METHOD/K -> PRUNING, DEEPSPEED

$LAUNCHER llava/train/train_mem.py \
    ${DEEPSPEED[@]+"${DEEPSPEED[@]}"} \
    --model_name_or_path "$MODEL" \
    --version plain \
    --data_path "$DATA_PATH" \
    --image_folder "$IMAGE_FOLDER" \
    --vision_tower "$VISION_TOWER" \
    --mm_projector_type mlp2x_gelu \
    --tune_mm_mlp_adapter True \
    --mm_vision_select_layer -2 \
    --mm_use_im_start_end False \
    --mm_use_im_patch_token False \
    --bf16 True \
    --output_dir "$OUTPUT_DIR" \
    --num_train_epochs 1 \
    --per_device_train_batch_size 32 \
    --per_device_eval_batch_size 4 \
    --gradient_accumulation_steps 1 \
    --eval_strategy "no" \
    --save_strategy "steps" \
    --save_steps 24000 \
    --save_total_limit 1 \
    --learning_rate 1e-3 \
    --weight_decay 0. \
    --warmup_ratio 0.03 \
    --lr_scheduler_type "cosine" \
    --logging_steps 1 \
    --tf32 True \
    --model_max_length 2048 \
    --gradient_checkpointing True \
    --dataloader_num_workers "$WORKERS" \
    --lazy_preprocess True \
    --report_to "$REPORT_TO" \
    ${PRUNING[@]+"${PRUNING[@]}"} "$@"
