#!/usr/bin/env bash
# The whole DPC base-to-new experiment in one command:
#   bash scripts/dpc/base2new_train.sh DATASET SEED [coop|cocoop|kgcoop|maple|ivlp|promptsrc|promptkd] [yacs options...]
# 1. stage 1: the backbone on the base classes (reused when finished, resumed when interrupted),
# 2. stage 2: DPC on the same base-class shots, starting from the stage-1 prompt (final test = base accuracy),
# 3. both models evaluated on the new classes (for the side-by-side table of tools/parse_test_res.py).
# PromptKD first trains its teacher (PromptSRC on ViT-L/14, once per dataset) unless the options name one:
#   ... promptkd TRAINER.PROMPTKD.TEACHER_DIR /path/to/teacher_model/<dataset>   (a published teacher)
# STAGE1_CONFIG / DPC_CONFIG / TEACHER_CONFIG override the default config files.
source "$(dirname "$0")/../lib.sh"
parse_dpc_args "bash scripts/dpc/base2new_train.sh DATASET SEED [coop|cocoop|kgcoop|maple|ivlp|promptsrc|promptkd] [yacs options...]" "$@"

if [ "$TRAINER" = PromptKD ]; then
    promptkd_teacher train "$DATASET" "${OPTS[@]}"
    OPTS+=("${TEACHER_OPTS[@]}")
fi
train_base "$DATASET" "$TRAINER" "$STAGE1_CONFIG" "$SEED" "${OPTS[@]}"
stage1_options "$DATASET" "$TRAINER" "$SEED"
train_base "$DATASET" "DPC_$TRAINER" "$DPC_CONFIG" "$SEED" "${STAGE1_OPTS[@]}" "${OPTS[@]}"
test_new "$DATASET" "$TRAINER" "$STAGE1_CONFIG" "$SEED" "${OPTS[@]}"
test_new "$DATASET" "DPC_$TRAINER" "$DPC_CONFIG" "$SEED" "${OPTS[@]}"
echo "Done. Results: python tools/parse_test_res.py --base2new $OUTPUT/base2new --dataset $DATASET"
