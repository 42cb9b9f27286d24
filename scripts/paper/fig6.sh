#!/usr/bin/env bash
# Fig. 6: w_b (one stage 2 per value) and w_n (one evaluation sweep) (CoOp).
#   bash scripts/paper/fig6.sh [--datasets ...] [--seeds 1 2 3] [--workers N | --gpus 0,1 --per-gpu 2 | --cluster slurm ...] [-- yacs options]
# Runs the grid through tools/experiments.py (finished runs are skipped), then prints the table.
set -euo pipefail
exec "${PYTHON:-python}" "$(dirname "$0")/../../tools/experiments.py" fig6 "$@"
