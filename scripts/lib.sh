# Helpers shared by the experiment scripts (sourced, not run).
#
# Environment:
#   DATA_ROOT    dataset root holding eurosat/, oxford_pets/, ... (default: <repo>/data)
#   OUTPUT_ROOT  where runs go (default: output, relative to the repository)
#   SHOTS        shots per base class (default: 16)
#   PYTHON       interpreter (default: python)
#   FORCE=1      redo evaluations that already finished (train.py --force)
# train.py itself reuses a finished run only when its settings fingerprint matches, resumes an
# interrupted one only with the same settings, and refuses a directory another process holds.
# Trailing arguments of every script are yacs options passed to train.py (e.g. MODEL.BACKBONE.PATH /x.pt).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# relative DATA_ROOT / OUTPUT_ROOT are taken from the caller's directory; the scripts then run in the repo
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
DATA=$(absolute "${DATA_ROOT:-$REPO/data}")
OUTPUT=${OUTPUT_ROOT:+$(absolute "$OUTPUT_ROOT")}
OUTPUT=${OUTPUT:-output}
export DATA_ROOT=$DATA
[ -z "${OUTPUT_ROOT:-}" ] || export OUTPUT_ROOT=$OUTPUT
cd "$REPO"
SHOTS=${SHOTS:-16}
PYTHON=${PYTHON:-python}

die() { echo "error: $*" >&2; exit 2; }

# coop|maple|promptsrc -> trainer class name
backbone_trainer() {
    case "$1" in
        coop) echo CoOp ;;
        maple) echo MaPLe ;;
        promptsrc) echo PromptSRC ;;
        *) die "unknown backbone '$1' (choose coop, maple or promptsrc)" ;;
    esac
}

# trainer -> config file of the DPC paper's base-to-new setting (Sec. 4.1: backbones at batch 32,
# DPC at batch 4 with K = 8 and otherwise the backbone's hyper-parameters)
default_config() {
    case "$1" in
        CoOp) echo configs/trainers/CoOp/vit_b16_c4_ep20_batch32_lr35.yaml ;;
        MaPLe) echo configs/trainers/MaPLe/vit_b16_c2_ep20_batch32_2ctx.yaml ;;
        PromptSRC) echo configs/trainers/PromptSRC/vit_b16_c2_ep20_batch32_4+4ctx.yaml ;;
        DPC_CoOp) echo configs/trainers/DPC/CoOp/vit_b16_c4_ep20_batch4_lr35_top8.yaml ;;
        DPC_MaPLe) echo configs/trainers/DPC/MaPLe/vit_b16_c2_ep20_batch4_2ctx_top8.yaml ;;
        DPC_PromptSRC) echo configs/trainers/DPC/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx_top8.yaml ;;
        *) die "no default config for trainer '$1'" ;;
    esac
}

dataset_config() {
    local file="configs/datasets/$1.yaml"
    [ -f "$file" ] || die "no dataset config $file (datasets: $(ls configs/datasets | sed 's/\.yaml//' | tr '\n' ' '))"
    echo "$file"
}

# run_dir train_base|test_new DATASET TRAINER CONFIG_FILE SEED
run_dir() {
    echo "$OUTPUT/base2new/$1/$2/shots_$SHOTS/$3/$(basename "$4" .yaml)/seed$5"
}

# newest numbered checkpoint epoch of a training run (empty when there is none)
last_epoch() {
    local pointer
    for pointer in "$1"/*/checkpoint; do
        if [ -f "$pointer" ]; then
            sed -n 's/^model\.pth\.tar-\([0-9]*\)$/\1/p' "$pointer"
            return 0
        fi
    done
    return 0
}

# train_base DATASET TRAINER CONFIG_FILE SEED [opts...]: train on the base classes (its final test = base accuracy)
train_base() {
    local dataset=$1 trainer=$2 config=$3 seed=$4
    shift 4
    local dir
    dir=$(run_dir train_base "$dataset" "$trainer" "$config" "$seed")
    echo "[$trainer] training in $dir"
    "$PYTHON" train.py --root "$DATA" --seed "$seed" --trainer "$trainer" \
        --dataset-config-file "$(dataset_config "$dataset")" --config-file "$config" --output-dir "$dir" \
        DATASET.NUM_SHOTS "$SHOTS" DATASET.SUBSAMPLE_CLASSES base "$@"
}

# test_new DATASET TRAINER CONFIG_FILE SEED [opts...]: evaluate the trained base run on the new classes
test_new() {
    local dataset=$1 trainer=$2 config=$3 seed=$4
    shift 4
    local model_dir dir epoch force=()
    model_dir=$(run_dir train_base "$dataset" "$trainer" "$config" "$seed")
    dir=$(run_dir test_new "$dataset" "$trainer" "$config" "$seed")
    if [ "${FORCE:-0}" = 1 ]; then force=(--force); fi
    [ -f "$model_dir/done.json" ] || die "no finished training run in $model_dir: run (or let finish) the matching base2new_train.sh first"
    epoch=$(last_epoch "$model_dir")
    echo "[$trainer] testing $model_dir (epoch $epoch) on the new classes in $dir"
    "$PYTHON" train.py --root "$DATA" --seed "$seed" --trainer "$trainer" \
        --dataset-config-file "$(dataset_config "$dataset")" --config-file "$config" --output-dir "$dir" \
        --model-dir "$model_dir" --load-epoch "$epoch" --eval-only "${force[@]}" \
        DATASET.NUM_SHOTS "$SHOTS" DATASET.SUBSAMPLE_CLASSES new "$@"
}

# stage1_options DATASET BACKBONE_TRAINER SEED: sets STAGE1_OPTS, the DPC.* options pointing stage 2 at stage 1
stage1_options() {
    local config dir epoch
    config=${STAGE1_CONFIG:-$(default_config "$2")}
    dir=$(run_dir train_base "$1" "$2" "$config" "$3")
    epoch=$(last_epoch "$dir")
    STAGE1_OPTS=(DPC.STAGE1_DIR "$dir" DPC.STAGE1_EPOCH "${epoch:--1}")
}

# parse_dpc_args USAGE ARGS...: sets DATASET, SEED, TRAINER (from an optional coop|maple|promptsrc)
# and the OPTS array (the trailing yacs options) for the scripts in scripts/dpc/
parse_dpc_args() {
    local usage=$1
    shift
    [ "$#" -ge 2 ] || die "usage: $usage"
    DATASET=$1 SEED=$2
    shift 2
    local backbone=coop
    case "${1:-}" in
        coop|maple|promptsrc) backbone=$1; shift ;;
        *.*|"") ;;  # yacs options follow
        *) die "unknown backbone '$1' (choose coop, maple or promptsrc)" ;;
    esac
    TRAINER=$(backbone_trainer "$backbone")
    # EuroSAT has 5 base classes, fewer than the paper's K = 8: use K = 5 there (the options can override it)
    OPTS=()
    [ "$DATASET" = eurosat ] && OPTS=(DPC.TOPK 5)
    OPTS+=("$@")
}

# backbone_main train|test TRAINER SCRIPT_NAME DATASET SEED [opts...]: body of scripts/<backbone>/*.sh
backbone_main() {
    local action=$1 trainer=$2 name=$3
    shift 3
    [ "$#" -ge 2 ] || die "usage: bash $name DATASET SEED [yacs options...]"
    local dataset=$1 seed=$2
    shift 2
    local config=${CONFIG:-$(default_config "$trainer")}
    if [ "$action" = train ]; then
        train_base "$dataset" "$trainer" "$config" "$seed" "$@"
    else
        test_new "$dataset" "$trainer" "$config" "$seed" "$@"
    fi
}
