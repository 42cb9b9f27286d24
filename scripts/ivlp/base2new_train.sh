#!/usr/bin/env bash
# IVLP on the base classes (16 shots): bash scripts/ivlp/base2new_train.sh DATASET SEED [yacs options...]
# Skips a finished run, resumes an interrupted one; its final test is the base-class accuracy.
source "$(dirname "$0")/../lib.sh"
backbone_main train IVLP scripts/ivlp/base2new_train.sh "$@"
