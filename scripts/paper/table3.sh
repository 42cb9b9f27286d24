#!/usr/bin/env bash
# Table 3: DPC's components switched off one by one (CoOp).
#   bash scripts/paper/table3.sh [--datasets ...] [--seeds 1 2 3] [--workers N | --gpus 0,1 --per-gpu 2 | --cluster slurm ...] [-- yacs options]
# Runs the grid through tools/experiments.py (finished runs are skipped), then prints the table.
set -euo pipefail
exec "${PYTHON:-python}" "$(dirname "$0")/../../tools/experiments.py" table3 "$@"
