#!/bin/bash
# Sourced by the training recipes in scripts/v1_5/ after their own defaults (DEEPSPEED_CONFIG included).
#   LAUNCHER   deepspeed (default), or e.g. "python" with DEEPSPEED_CONFIG= for one process without DeepSpeed
#   REPORT_TO  none (upstream: wandb)
#   METHOD, K  visual-token pruning during training: the shared flags --pruning-method/--visual-token-num
#   WORKERS    DataLoader workers per process (upstream: 4; default: 4, or fewer on a machine with fewer CPUs)
LAUNCHER=${LAUNCHER:-deepspeed}
REPORT_TO=${REPORT_TO:-none}          # upstream: wandb
METHOD=${METHOD:-none}                # visual-token pruning during training (llava.pruning methods)
K=${K:-}                              # visual tokens per image fed to the LLM
CPUS=$(nproc)
WORKERS=${WORKERS:-$(( CPUS < 4 ? CPUS : 4 ))}

PRUNING=()
if [ "$METHOD" != "none" ]; then
    PRUNING=(--pruning-method "$METHOD" --visual-token-num "${K:?set K (visual tokens per image) with METHOD=$METHOD}")
fi
DEEPSPEED=()                          # DEEPSPEED_CONFIG= LAUNCHER=python: one process, no DeepSpeed
if [ -n "$DEEPSPEED_CONFIG" ]; then
    DEEPSPEED=(--deepspeed "$DEEPSPEED_CONFIG")
fi
