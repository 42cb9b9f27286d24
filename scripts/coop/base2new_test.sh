#!/usr/bin/env bash
# Evaluate the CoOp base run on the new classes: bash scripts/coop/base2new_test.sh DATASET SEED [yacs options...]
source "$(dirname "$0")/../lib.sh"
backbone_main test CoOp scripts/coop/base2new_test.sh "$@"
