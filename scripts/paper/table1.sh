#!/usr/bin/env bash
# Table 1: base-to-new, the four backbones and their DPC versions, 11 datasets.
#   bash scripts/paper/table1.sh [--datasets ...] [--seeds 1 2 3] [--workers N | --gpus 0,1 --per-gpu 2 | --cluster slurm ...] [-- yacs options]
# Runs the grid through tools/experiments.py (finished runs are skipped), then prints the table.
set -euo pipefail
exec "${PYTHON:-python}" "$(dirname "$0")/../../tools/experiments.py" table1 "$@"
