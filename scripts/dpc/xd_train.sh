#!/usr/bin/env bash
# Cross-dataset and domain generalisation (the paper's Table 2) in one command:
#   bash scripts/dpc/xd_train.sh SEED [coop|cocoop|kgcoop|maple|ivlp|promptsrc] [yacs options...]
# 1. stage 1: the backbone on ImageNet, all 1000 classes, SHOTS (16) shots (its final test = source accuracy),
# 2. stage 2: DPC on the same shots (final test with P' = source accuracy),
# 3. both evaluated on every target of TARGETS (default: the 10 cross-dataset and the 4 cross-domain datasets);
#    DPC with DPC.EVAL_MODE new (w_n P' + (1 - w_n) P), as the release evaluates every dataset but the source.
# Configs: the backbone authors' cross-dataset config where published (MaPLe, PromptSRC), else the base-to-new one.
# Runs go to $OUTPUT_ROOT/xd/{train_source/imagenet,test_target/<target>}/shots_16/<trainer>/<cfg>/seed<seed>;
# python tools/paper_tables.py $OUTPUT_ROOT --tables table2 prints the table. STEPS and the tags of
# scripts/lib.sh apply (STEPS "stage1 stage2 test").
source "$(dirname "$0")/../lib.sh"
USAGE="bash scripts/dpc/xd_train.sh SEED [coop|cocoop|kgcoop|maple|ivlp|promptsrc] [yacs options...]"
[ "$#" -ge 1 ] || die "usage: $USAGE"
SOURCE=imagenet
CONFIG_OF=xd_config parse_dpc_args "$USAGE" "$SOURCE" "$@"
[ "$TRAINER" != PromptKD ] || die "PromptKD's cross-dataset protocol distils one student per target dataset; it is not scripted here"
TARGETS=${TARGETS:-$XD_TARGETS $DG_TARGETS}
for target in $TARGETS; do check_dataset "$target"; done

STAGE1=("$TRAINER" "$STAGE1_CONFIG" "$SEED" "${OPTS[@]}" "${STAGE1_EXTRA_OPTS[@]}")
STAGE2=("DPC_$TRAINER" "$DPC_CONFIG" "$SEED" "${OPTS[@]}" "${DPC_EXTRA_OPTS[@]}")
if step stage1; then TAG=${STAGE1_TAG:-} train_into xd/train_source all "$SOURCE" "${STAGE1[@]}"; fi
if step stage2; then
    stage1_options "$SOURCE" "$TRAINER" "$SEED" xd/train_source
    TAG=${DPC_TAG:-} train_into xd/train_source all "$SOURCE" "${STAGE2[@]:0:3}" "${STAGE1_OPTS[@]}" "${STAGE2[@]:3}"
fi
if step test; then
    for target in $TARGETS; do
        TAG=${STAGE1_TAG:-} evaluate xd/train_source "$SOURCE" xd/test_target "$target" all "${STAGE1[@]}"
        TAG=${DPC_TAG:-} EVAL_TAG=${DPC_EVAL_TAG:-${DPC_TAG:-}} evaluate xd/train_source "$SOURCE" xd/test_target "$target" all \
            "${STAGE2[@]}" DPC.EVAL_MODE new "${DPC_EVAL_EXTRA_OPTS[@]}"
    done
fi
echo "Done. Results: python tools/paper_tables.py $OUTPUT --tables table2"
