#!/usr/bin/env bash
# Figs. 5 and 1: backbone, + DPC and + DePT base-to-new (CoOp, MaPLe, PromptSRC), 11 datasets; Table 1's runs reused.
#   bash scripts/paper/fig5.sh [--datasets ...] [--seeds 1 2 3] [--backbones ...] [--workers N | --gpus 0,1 --per-gpu 2 | --cluster slurm ...] [-- yacs options]
# Runs the grid through tools/experiments.py (finished runs are skipped), then prints Fig. 5's and Fig. 1's tables
# and draws fig5.png and fig1.png into OUTPUT_ROOT/figures (--figures DIR; --paper: the published numbers beside).
# Fig. 1 has every backbone with runs (table1.sh adds PromptKD).
set -euo pipefail
exec "${PYTHON:-python}" "$(dirname "$0")/../../tools/experiments.py" fig5 "$@"
