#!/usr/bin/env bash
# Seeds 1-3 (or SEEDS="..."), then the backbone vs backbone+DPC table:
#   bash scripts/dpc/base2new_seeds.sh DATASET [coop|maple|promptsrc] [yacs options...]
source "$(dirname "$0")/../lib.sh"
[ "$#" -ge 1 ] || die "usage: bash scripts/dpc/base2new_seeds.sh DATASET [coop|maple|promptsrc] [yacs options...]"
DATASET=$1
shift
for SEED in ${SEEDS:-1 2 3}; do
    bash scripts/dpc/base2new_train.sh "$DATASET" "$SEED" "$@"
done
"$PYTHON" tools/parse_test_res.py --base2new "$OUTPUT/base2new" --dataset "$DATASET" --shots "$SHOTS"
