#!/usr/bin/env bash
# KgCoOp on the base classes (16 shots): bash scripts/kgcoop/base2new_train.sh DATASET SEED [yacs options...]
# Skips a finished run, resumes an interrupted one; its final test is the base-class accuracy.
source "$(dirname "$0")/../lib.sh"
backbone_main train KgCoOp scripts/kgcoop/base2new_train.sh "$@"
