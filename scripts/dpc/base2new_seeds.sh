#!/usr/bin/env bash
# Seeds 1-3 (or SEEDS="..."), then the backbone vs backbone+DPC table:
#   bash scripts/dpc/base2new_seeds.sh DATASET [coop|cocoop|kgcoop|maple|ivlp|promptsrc|promptkd] [yacs options...]
source "$(dirname "$0")/../lib.sh"
USAGE="bash scripts/dpc/base2new_seeds.sh DATASET [coop|cocoop|kgcoop|maple|ivlp|promptsrc|promptkd] [yacs options...]"
[ "$#" -ge 1 ] || die "usage: $USAGE"
DATASET=$1
shift
# check every seed and the other arguments before the first run starts
for SEED in ${SEEDS:-1 2 3}; do check_seed "$SEED"; done
parse_dpc_args "$USAGE" "$DATASET" 1 "$@"
for SEED in ${SEEDS:-1 2 3}; do
    bash scripts/dpc/base2new_train.sh "$DATASET" "$SEED" "$@"
done
"$PYTHON" tools/parse_test_res.py --base2new "$OUTPUT/base2new" --dataset "$DATASET" --shots "$SHOTS"
