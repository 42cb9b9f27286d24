#!/usr/bin/env bash
# The built-in default: DPC on ToyWorld, a colour x shape world, with a CLIP pretrained there from scratch (CPU):
#   bash scripts/dpc/demo.sh [coop|cocoop|kgcoop|maple|ivlp|promptsrc|promptkd]
# With the shipped toy CLIP (assets/), runs scripts/dpc/base2new_train.sh toyworld over seeds 1 2 3, prints zero-shot
# CLIP, the backbone and backbone+DPC (base / new / H, chance level) and writes a figure (python -m tools.demo --help).
# Everything goes to output/demo/ (or DEMO_ROOT); finished runs are reused, so a second call takes seconds.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
case "${1:-coop}" in  # checked before anything is written
    coop|cocoop|kgcoop|maple|ivlp|promptsrc|promptkd)
        [ "$#" -le 1 ] || { echo "usage: bash scripts/dpc/demo.sh [coop|cocoop|kgcoop|maple|ivlp|promptsrc|promptkd]" >&2; exit 2; } ;;
    *) echo "error: unknown backbone '$1' (choose coop, cocoop, kgcoop, maple, ivlp, promptsrc or promptkd)" >&2; exit 2 ;;
esac
mkdir -p "${DEMO_ROOT:-output/demo}"
ROOT=$(cd "${DEMO_ROOT:-output/demo}" && pwd)  # relative to the caller's directory
cd "$REPO"
exec "${PYTHON:-python}" -m tools.demo --backbone "${1:-coop}" --root "$ROOT"
