#!/usr/bin/env bash
# The whole DPC base-to-new experiment in one command:
#   bash scripts/dpc/base2new_train.sh DATASET SEED [coop|cocoop|kgcoop|maple|ivlp|promptsrc|promptkd] [yacs options...]
# 1. stage 1: the backbone on the base classes (reused when finished, resumed when interrupted),
# 2. stage 2: DPC on the same base-class shots, starting from the stage-1 prompt (final test = base accuracy),
# 3. both models evaluated on the new classes (for the side-by-side table of tools/parse_test_res.py).
# PromptKD first trains its teacher (PromptSRC on ViT-L/14, once per dataset) unless the options name one:
#   ... promptkd TRAINER.PROMPTKD.TEACHER_DIR /path/to/teacher_model/<dataset>   (a published teacher)
# STAGE1_CONFIG / DPC_CONFIG / TEACHER_CONFIG override the default config files; STEPS, *_TAG and *_EXTRA
# (see scripts/lib.sh) run some steps only, or a tagged variant (the ablations of tools/experiments.py).
# The options of every step are checked first (train.py --check-only), so a bad stage-2 value stops it before stage 1.
source "$(dirname "$0")/../lib.sh"
parse_dpc_args "bash scripts/dpc/base2new_train.sh DATASET SEED [coop|cocoop|kgcoop|maple|ivlp|promptsrc|promptkd] [yacs options...]" "$@"

run_steps() {
    local opts=("${OPTS[@]}")
    if [ "$TRAINER" = PromptKD ]; then
        if step teacher; then promptkd_teacher train "$DATASET" "${opts[@]}"; else promptkd_teacher find "$DATASET" "${opts[@]}"; fi
        opts+=("${TEACHER_OPTS[@]}")
    fi
    local stage1=("$DATASET" "$TRAINER" "$STAGE1_CONFIG" "$SEED" "${opts[@]}" "${STAGE1_EXTRA_OPTS[@]}")
    if step stage1; then TAG=${STAGE1_TAG:-} train_base "${stage1[@]}"; fi
    if step stage2; then
        stage1_options "$DATASET" "$TRAINER" "$SEED"
        TAG=${DPC_TAG:-} train_base "$DATASET" "DPC_$TRAINER" "$DPC_CONFIG" "$SEED" "${STAGE1_OPTS[@]}" "${opts[@]}" "${DPC_EXTRA_OPTS[@]}"
    fi
    if step test; then
        TAG=${STAGE1_TAG:-} test_new "${stage1[@]}"
        TAG=${DPC_TAG:-} EVAL_TAG=${DPC_EVAL_TAG:-${DPC_TAG:-}} test_new "$DATASET" "DPC_$TRAINER" "$DPC_CONFIG" "$SEED" \
            "${opts[@]}" "${DPC_EXTRA_OPTS[@]}" "${DPC_EVAL_EXTRA_OPTS[@]}"
    fi
}
checked run_steps
echo "Done. Results: python tools/parse_test_res.py --base2new $OUTPUT/base2new --dataset $DATASET"
