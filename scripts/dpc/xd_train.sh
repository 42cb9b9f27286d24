#!/usr/bin/env bash
# Cross-dataset and domain generalisation (the paper's Table 2) in one command:
#   bash scripts/dpc/xd_train.sh SEED [coop|cocoop|kgcoop|maple|ivlp|promptsrc|promptkd] [yacs options...]
# 1. stage 1: the backbone on ImageNet, all 1000 classes, SHOTS (16) shots (its final test = source accuracy),
# 2. stage 2: DPC on the same shots (final test with P' = source accuracy),
# 3. both evaluated on every target of TARGETS (default: the 10 cross-dataset and the 4 cross-domain datasets);
#    DPC with DPC.EVAL_MODE new (w_n P' + (1 - w_n) P), as the release evaluates every dataset but the source.
# PromptKD follows its own (transductive) protocol: a ViT-L/14 teacher on ImageNet's 1000 classes (step teacher),
# a student distilled on ImageNet's unlabelled images (stage 1) and DPC on ImageNet (stage 2); on each target a
# student of that target is distilled from the ImageNet teacher (step test). DPC trains on the source only, so a
# target's model is that student for both rows, as the paper's equal target numbers say.
# Configs: the backbone authors' cross-dataset config where published (MaPLe, PromptSRC, PromptKD), else the
# base-to-new one. Runs go to $OUTPUT_ROOT/xd/{train_source/imagenet,test_target/<target>}/shots_16/<trainer>/<cfg>/seed<seed>;
# python tools/paper_tables.py $OUTPUT_ROOT --tables table2 prints the table. STEPS and the tags of scripts/lib.sh apply.
source "$(dirname "$0")/../lib.sh"
USAGE="bash scripts/dpc/xd_train.sh SEED [coop|cocoop|kgcoop|maple|ivlp|promptsrc|promptkd] [yacs options...]"
[ "$#" -ge 1 ] || die "usage: $USAGE"
SOURCE=imagenet
CONFIG_OF=xd_config parse_dpc_args "$USAGE" "$SOURCE" "$@"
TARGETS=${TARGETS:-$XD_TARGETS $DG_TARGETS}
for target in $TARGETS; do check_dataset "$target"; done
run_steps() {
    local opts=("${OPTS[@]}") target
    if [ "$TRAINER" = PromptKD ]; then
        TEACHER_KIND=xd/train_source TEACHER_SUBSAMPLE=all
        if step teacher; then promptkd_teacher train "$SOURCE" "${opts[@]}"; else promptkd_teacher find "$SOURCE" "${opts[@]}"; fi
        opts+=("${TEACHER_OPTS[@]}")
    fi
    local stage1=("$TRAINER" "$STAGE1_CONFIG" "$SEED" "${opts[@]}" "${STAGE1_EXTRA_OPTS[@]}")
    local stage2=("DPC_$TRAINER" "$DPC_CONFIG" "$SEED" "${opts[@]}" "${DPC_EXTRA_OPTS[@]}")
    if step stage1; then TAG=${STAGE1_TAG:-} train_into xd/train_source all "$SOURCE" "${stage1[@]}"; fi
    if step stage2; then
        stage1_options "$SOURCE" "$TRAINER" "$SEED" xd/train_source
        TAG=${DPC_TAG:-} train_into xd/train_source all "$SOURCE" "${stage2[@]:0:3}" "${STAGE1_OPTS[@]}" "${stage2[@]:3}"
    fi
    if step test; then
        for target in $TARGETS; do
            if [ "$TRAINER" = PromptKD ]; then
                TAG=${STAGE1_TAG:-} train_into xd/test_target all "$target" "${stage1[@]}"
                say "[DPC_PromptKD] on $target: the model is PromptKD's student of $target (DPC trains on the source only)"
                continue
            fi
            TAG=${STAGE1_TAG:-} evaluate xd/train_source "$SOURCE" xd/test_target "$target" all "${stage1[@]}"
            TAG=${DPC_TAG:-} EVAL_TAG=${DPC_EVAL_TAG:-${DPC_TAG:-}} evaluate xd/train_source "$SOURCE" xd/test_target "$target" all \
                "${stage2[@]}" DPC.EVAL_MODE new "${DPC_EVAL_EXTRA_OPTS[@]}"
        done
    fi
}
checked run_steps
echo "Done. Results: python tools/paper_tables.py $OUTPUT --tables table2"
