#!/usr/bin/env bash
# DePT (Zhang et al., CVPR 2024) base-to-new in one command, the counterpart of scripts/dpc/base2new_train.sh:
#   bash scripts/dept/base2new_train.sh DATASET SEED [coop|cocoop|kgcoop|maple|promptsrc] [yacs options...]
# 1. DePT_<Backbone> on the base classes: the backbone's prompts and DePT's CAT head trained together, in one stage
#    (reused when finished, resumed when interrupted); its final test is the base accuracy (the fused prediction),
# 2. the trained model evaluated on the new classes (the prompts alone, as DePT predicts them).
# DEPT_CONFIG overrides DePT's config file (e.g. the backbone's own, configs/trainers/CoOp/...: DEPT.* keep DePT's).
source "$(dirname "$0")/../lib.sh"
parse_dept_args "bash scripts/dept/base2new_train.sh DATASET SEED [coop|cocoop|kgcoop|maple|promptsrc] [yacs options...]" "$@"
train_base "$DATASET" "$TRAINER" "$CONFIG" "$SEED" "${OPTS[@]}"
test_new "$DATASET" "$TRAINER" "$CONFIG" "$SEED" "${OPTS[@]}"
echo "Done. Results: python tools/parse_test_res.py --base2new $OUTPUT/base2new --dataset $DATASET"
