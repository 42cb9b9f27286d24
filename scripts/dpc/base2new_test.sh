#!/usr/bin/env bash
# Evaluate a trained DPC model (and its stage-1 backbone) on the new classes:
#   bash scripts/dpc/base2new_test.sh DATASET SEED [coop|cocoop|kgcoop|maple|ivlp|promptsrc|promptkd] [yacs options...]
# Weights can change without retraining, e.g. FORCE=1 ... DPC.SWEEP_W_NEW "[0.0, 1e-6, 0.01, 0.1]"
# (FORCE re-runs the DPC evaluation only; the backbone's is evaluated once.) The tags of scripts/lib.sh apply.
source "$(dirname "$0")/../lib.sh"
parse_dpc_args "bash scripts/dpc/base2new_test.sh DATASET SEED [coop|cocoop|kgcoop|maple|ivlp|promptsrc|promptkd] [yacs options...]" "$@"
if [ "$TRAINER" = PromptKD ]; then
    promptkd_teacher find "$DATASET" "${OPTS[@]}"
    OPTS+=("${TEACHER_OPTS[@]}")
fi
FORCE=0 TAG=${STAGE1_TAG:-} test_new "$DATASET" "$TRAINER" "$STAGE1_CONFIG" "$SEED" "${OPTS[@]}" "${STAGE1_EXTRA_OPTS[@]}"
TAG=${DPC_TAG:-} EVAL_TAG=${DPC_EVAL_TAG:-${DPC_TAG:-}} test_new "$DATASET" "DPC_$TRAINER" "$DPC_CONFIG" "$SEED" \
    "${OPTS[@]}" "${DPC_EXTRA_OPTS[@]}" "${DPC_EVAL_EXTRA_OPTS[@]}"
