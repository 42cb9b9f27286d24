#!/usr/bin/env bash
# Evaluate the KgCoOp base run on the new classes: bash scripts/kgcoop/base2new_test.sh DATASET SEED [yacs options...]
source "$(dirname "$0")/../lib.sh"
backbone_main test KgCoOp scripts/kgcoop/base2new_test.sh "$@"
