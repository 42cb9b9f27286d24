#!/usr/bin/env bash
# Evaluate the MaPLe base run on the new classes: bash scripts/maple/base2new_test.sh DATASET SEED [yacs options...]
source "$(dirname "$0")/../lib.sh"
backbone_main test MaPLe scripts/maple/base2new_test.sh "$@"
