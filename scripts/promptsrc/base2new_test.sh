#!/usr/bin/env bash
# Evaluate the PromptSRC base run on the new classes: bash scripts/promptsrc/base2new_test.sh DATASET SEED [yacs options...]
source "$(dirname "$0")/../lib.sh"
backbone_main test PromptSRC scripts/promptsrc/base2new_test.sh "$@"
