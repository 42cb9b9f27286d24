#!/usr/bin/env bash
# CoOp's few-shot protocol with DPC: all classes, SHOTS shots (run it with SHOTS=1, 2, 4, 8, 16):
#   SHOTS=4 bash scripts/dpc/fewshot_train.sh DATASET SEED [coop|cocoop|kgcoop|maple|ivlp|promptsrc] [yacs options...]
# 1. stage 1: the backbone on every class (its final test = the backbone's accuracy),
# 2. stage 2: DPC from it on the same shots (its final test, with P', = DPC's accuracy).
# Runs go to $OUTPUT_ROOT/fewshot/train_all/<dataset>/shots_<SHOTS>/<trainer>/<cfg>/seed<seed>;
# python tools/paper_tables.py $OUTPUT_ROOT --tables fewshot prints the table. Configs as base-to-new.
source "$(dirname "$0")/../lib.sh"
parse_dpc_args "SHOTS=N bash scripts/dpc/fewshot_train.sh DATASET SEED [coop|cocoop|kgcoop|maple|ivlp|promptsrc] [yacs options...]" "$@"
[ "$TRAINER" != PromptKD ] || die "PromptKD distils on every image of every class: it has no few-shot protocol"
run_steps() {
    if step stage1; then
        TAG=${STAGE1_TAG:-} train_into fewshot/train_all all "$DATASET" "$TRAINER" "$STAGE1_CONFIG" "$SEED" "${OPTS[@]}" "${STAGE1_EXTRA_OPTS[@]}"
    fi
    if step stage2; then
        stage1_options "$DATASET" "$TRAINER" "$SEED" fewshot/train_all
        TAG=${DPC_TAG:-} train_into fewshot/train_all all "$DATASET" "DPC_$TRAINER" "$DPC_CONFIG" "$SEED" "${STAGE1_OPTS[@]}" \
            "${OPTS[@]}" "${DPC_EXTRA_OPTS[@]}"
    fi
}
checked run_steps
echo "Done. Results: python tools/paper_tables.py $OUTPUT --tables fewshot"
