#!/usr/bin/env bash
# CoCoOp on the base classes (16 shots): bash scripts/cocoop/base2new_train.sh DATASET SEED [yacs options...]
# Skips a finished run, resumes an interrupted one; its final test is the base-class accuracy.
source "$(dirname "$0")/../lib.sh"
backbone_main train CoCoOp scripts/cocoop/base2new_train.sh "$@"
