#!/usr/bin/env bash
# PromptKD on a dataset: bash scripts/promptkd/base2new_train.sh DATASET SEED [yacs options...]
# Trains the PromptSRC ViT-L/14 teacher first unless TRAINER.PROMPTKD.TEACHER_DIR names one, then distils the
# student on every training image (transductive, as published); its final test is the base-class accuracy.
source "$(dirname "$0")/../lib.sh"
backbone_main train PromptKD scripts/promptkd/base2new_train.sh "$@"
