#!/usr/bin/env bash
# Evaluate a trained DePT model on the new classes (again: FORCE=1 redoes a finished evaluation):
#   bash scripts/dept/base2new_test.sh DATASET SEED [coop|cocoop|kgcoop|maple|promptsrc] [yacs options...]
source "$(dirname "$0")/../lib.sh"
parse_dept_args "bash scripts/dept/base2new_test.sh DATASET SEED [coop|cocoop|kgcoop|maple|promptsrc] [yacs options...]" "$@"
test_new "$DATASET" "$TRAINER" "$CONFIG" "$SEED" "${OPTS[@]}"
