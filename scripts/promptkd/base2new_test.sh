#!/usr/bin/env bash
# Evaluate the PromptKD run of base2new_train.sh on the new classes (with the same teacher):
#   bash scripts/promptkd/base2new_test.sh DATASET SEED [yacs options...]
source "$(dirname "$0")/../lib.sh"
backbone_main test PromptKD scripts/promptkd/base2new_test.sh "$@"
