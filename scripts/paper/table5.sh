#!/usr/bin/env bash
# Table 5: shorter epoch budgets, 10+10 and 5+5 against 20+20 (CoOp).
#   bash scripts/paper/table5.sh [--datasets ...] [--seeds 1 2 3] [--workers N | --gpus 0,1 --per-gpu 2 | --cluster slurm ...] [-- yacs options]
# Runs the grid through tools/experiments.py (finished runs are skipped), then prints the table.
set -euo pipefail
exec "${PYTHON:-python}" "$(dirname "$0")/../../tools/experiments.py" table5 "$@"
