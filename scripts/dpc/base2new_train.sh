#!/usr/bin/env bash
# The whole DPC base-to-new experiment in one command:
#   bash scripts/dpc/base2new_train.sh DATASET SEED [coop|maple|promptsrc] [yacs options...]
# 1. stage 1: the backbone on the base classes (reused when finished, resumed when interrupted),
# 2. stage 2: DPC on the same base-class shots, starting from the stage-1 prompt (final test = base accuracy),
# 3. both models evaluated on the new classes (for the side-by-side table of tools/parse_test_res.py).
# STAGE1_CONFIG / DPC_CONFIG override the default config files.
source "$(dirname "$0")/../lib.sh"
[ "$#" -ge 2 ] || die "usage: bash scripts/dpc/base2new_train.sh DATASET SEED [coop|maple|promptsrc] [yacs options...]"
DATASET=$1 SEED=$2
shift 2
BACKBONE=coop
case "${1:-}" in coop|maple|promptsrc) BACKBONE=$1; shift ;; esac
TRAINER=$(backbone_trainer "$BACKBONE")
STAGE1_CONFIG=${STAGE1_CONFIG:-$(default_config "$TRAINER")}
DPC_CONFIG=${DPC_CONFIG:-$(default_config "DPC_$TRAINER")}

train_base "$DATASET" "$TRAINER" "$STAGE1_CONFIG" "$SEED" "$@"
# shellcheck disable=SC2046
train_base "$DATASET" "DPC_$TRAINER" "$DPC_CONFIG" "$SEED" $(stage1_options "$DATASET" "$TRAINER" "$SEED") "$@"
test_new "$DATASET" "$TRAINER" "$STAGE1_CONFIG" "$SEED" "$@"
test_new "$DATASET" "DPC_$TRAINER" "$DPC_CONFIG" "$SEED" "$@"
echo "Done. Results: python tools/parse_test_res.py --base2new $OUTPUT/base2new --dataset $DATASET"
