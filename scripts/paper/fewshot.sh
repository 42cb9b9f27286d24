#!/usr/bin/env bash
# CoOp's few-shot protocol (1, 2, 4, 8, 16 shots, all classes) with DPC.
#   bash scripts/paper/fewshot.sh [--datasets ...] [--seeds 1 2 3] [--workers N | --gpus 0,1 --per-gpu 2 | --cluster slurm ...] [-- yacs options]
# Runs the grid through tools/experiments.py (finished runs are skipped), then prints the table.
set -euo pipefail
exec "${PYTHON:-python}" "$(dirname "$0")/../../tools/experiments.py" fewshot "$@"
