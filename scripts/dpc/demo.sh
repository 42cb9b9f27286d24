#!/usr/bin/env bash
# The built-in default: the whole CoOp+DPC base-to-new pipeline on CPU in about a minute, with a tiny
# randomly initialised CLIP and a synthetic EuroSAT-layout dataset (nothing to download):
#   bash scripts/dpc/demo.sh [coop|cocoop|kgcoop|maple|ivlp|promptsrc|promptkd]
# Everything goes to output/demo/. Accuracies are those of an untrained tiny model: the point is the plumbing.
set -euo pipefail
shopt -s inherit_errexit
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
PYTHON=${PYTHON:-python}
DEMO=${DEMO_ROOT:-output/demo}
BACKBONE=${1:-coop}
TEACHER=()
case "$BACKBONE" in  # checked before anything is written
    coop|cocoop|kgcoop|maple|ivlp|promptsrc|promptkd)
        [ "$#" -le 1 ] || { echo "usage: bash scripts/dpc/demo.sh [coop|cocoop|kgcoop|maple|ivlp|promptsrc|promptkd]" >&2; exit 2; } ;;
    *) echo "error: unknown backbone '$BACKBONE' (choose coop, cocoop, kgcoop, maple, ivlp, promptsrc or promptkd)" >&2; exit 2 ;;
esac

"$PYTHON" -m tools.synthetic_data --root "$DEMO/data" --dataset eurosat --classes 10 --train 8 --test 10
[ -f "$DEMO/tiny-clip.pt" ] || "$PYTHON" -m tools.tiny_clip "$DEMO/tiny-clip.pt"
if [ "$BACKBONE" = promptkd ]; then  # PromptKD's teacher: a wider tiny CLIP with another embedding size
    [ -f "$DEMO/tiny-clip-large.pt" ] ||
        "$PYTHON" -m tools.tiny_clip "$DEMO/tiny-clip-large.pt" --width 128 --embed-dim 48 --seed 1
    TEACHER=(TRAINER.PROMPTKD.TEACHER_NAME custom TRAINER.PROMPTKD.TEACHER_PATH "$DEMO/tiny-clip-large.pt"
             TRAINER.PROMPTKD.PROMPT_DEPTH_VISION 3)
fi

export DATA_ROOT="$DEMO/data" OUTPUT_ROOT="$DEMO/output" SHOTS=${SHOTS:-8} PYTHON
bash scripts/dpc/base2new_train.sh eurosat 1 "$BACKBONE" \
    MODEL.BACKBONE.NAME custom MODEL.BACKBONE.PATH "$DEMO/tiny-clip.pt" INPUT.SIZE "(32,32)" DATALOADER.NUM_WORKERS 0 \
    DATALOADER.TEST.BATCH_SIZE 50 OPTIM.MAX_EPOCH 2 TRAINER.MAPLE.PROMPT_DEPTH 3 \
    TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION 3 TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT 3 \
    TRAINER.PROMPTSRC.GPA_MEAN 1 TRAINER.PROMPTSRC.GPA_STD 1 \
    TRAINER.IVLP.PROMPT_DEPTH_VISION 3 TRAINER.IVLP.PROMPT_DEPTH_TEXT 3 "${TEACHER[@]}"
"$PYTHON" tools/parse_test_res.py --base2new "$DEMO/output/base2new" --dataset eurosat --shots "$SHOTS"
