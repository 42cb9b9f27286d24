#!/usr/bin/env bash
# Evaluate the CoCoOp base run on the new classes: bash scripts/cocoop/base2new_test.sh DATASET SEED [yacs options...]
source "$(dirname "$0")/../lib.sh"
backbone_main test CoCoOp scripts/cocoop/base2new_test.sh "$@"
