#!/bin/bash
# LLaVA-1.5 stage 2: full fine-tuning of the LLM + projector (tower frozen) on the 665K mix, ZeRO-3.
# Pruning: METHOD=agile K=64 bash scripts/v1_5/finetune.sh (the settings are saved in config.json).
set -euo pipefail

MODEL=${MODEL:-lmsys/vicuna-13b-v1.5}
VISION_TOWER=${VISION_TOWER:-openai/clip-vit-large-patch14-336}
DATA_PATH=${DATA_PATH:-./playground/data/llava_v1_5_mix665k.json}
IMAGE_FOLDER=${IMAGE_FOLDER:-./playground/data}
PRETRAIN_MM_MLP_ADAPTER=${PRETRAIN_MM_MLP_ADAPTER:-./checkpoints/llava-v1.5-13b-pretrain/mm_projector.bin}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/llava-v1.5-13b}
DEEPSPEED_CONFIG=${DEEPSPEED_CONFIG-./scripts/zero3.json}
source "$(dirname "$0")/train_common.sh"   # LAUNCHER, REPORT_TO, METHOD/K -> PRUNING, DEEPSPEED

$LAUNCHER llava/train/train_mem.py \
    ${DEEPSPEED[@]+"${DEEPSPEED[@]}"} \
    --model_name_or_path "$MODEL" \
    --version v1 \
    --data_path "$DATA_PATH" \
    --image_folder "$IMAGE_FOLDER" \
    --vision_tower "$VISION_TOWER" \
    --pretrain_mm_mlp_adapter "$PRETRAIN_MM_MLP_ADAPTER" \
    --mm_projector_type mlp2x_gelu \
    --image_aspect_ratio pad \
    --group_by_modality_length True \
    --mm_vision_select_layer -2 \
    --mm_use_im_start_end False \
    --mm_use_im_patch_token False \
    --bf16 True \
    --output_dir "$OUTPUT_DIR" \
    --num_train_epochs 1 \
    --per_device_train_batch_size 16 \
    --per_device_eval_batch_size 4 \
    --gradient_accumulation_steps 1 \
    --eval_strategy "no" \
    --save_strategy "steps" \
    --save_steps 50000 \
    --save_total_limit 1 \
    --learning_rate 2e-5 \
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
