#!/usr/bin/env bash
# Evaluate the IVLP base run on the new classes: bash scripts/ivlp/base2new_test.sh DATASET SEED [yacs options...]
source "$(dirname "$0")/../lib.sh"
backbone_main test IVLP scripts/ivlp/base2new_test.sh "$@"
