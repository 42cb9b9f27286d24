# Helpers shared by the experiment scripts (sourced, not run).
#
# Environment:
#   DATA_ROOT    dataset root holding eurosat/, oxford_pets/, ... (default: <repo>/data)
#   OUTPUT_ROOT  where runs go (default: output, relative to the repository)
#   SHOTS        shots per base class (default: 16), or all: every training image (DATASET.NUM_SHOTS 0, runs in shots_all)
#   PYTHON       interpreter (default: python)
#   FORCE=1      redo evaluations that already finished, and start over a run recorded with other settings,
#                CLIP weights, dataset files or code behaviour version (train.py --force); a finished
#                training run with the same ones is still reused
#   DPC_VERBOSE=1  train.py prints its whole log on the terminal (default: a header, progress bars, results)
# train.py itself reuses a finished run only when its settings fingerprint matches, resumes an
# interrupted one only with the same settings, and refuses a directory another process holds.
# Trailing arguments of every script are yacs options passed to train.py (e.g. MODEL.BACKBONE.PATH /x.pt).
# Every argument is checked before anything runs; the first failing command stops the script.
set -euo pipefail
shopt -s inherit_errexit  # ... also inside $(...)

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
say() { [ -n "${CHECK_ONLY:-}" ] || echo "$@"; }  # progress lines, not in the checking pass (checked)

# ---- argument checks (bash only: they answer at once and create nothing)

dataset_names() {
    local file names=()
    for file in configs/datasets/*.yaml; do file=${file##*/}; names+=("${file%.yaml}"); done
    echo "${names[*]}"
}

check_dataset() {
    [[ $1 =~ ^[A-Za-z0-9_]+$ ]] && [ -f "configs/datasets/$1.yaml" ] ||
        die "unknown dataset '$1' (choose one of: $(dataset_names))"
}

check_seed() {
    [[ $1 =~ ^[1-9][0-9]*$ ]] || die "seed must be a positive integer, not '$1'"
}

check_config() {
    [ -f "$1" ] || die "config file not found: $1"
}

# check_opts KEY VALUE ...: trailing yacs options come in pairs with dotted upper-case keys (not DATASET.NUM_SHOTS:
# the run directories are named after SHOTS)
check_opts() {
    (( $# % 2 == 0 )) || die "yacs options come in KEY VALUE pairs; got an odd number of words: $*"
    local i
    for ((i = 1; i < $#; i += 2)); do
        [[ ${!i} =~ ^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$ ]] ||
            die "'${!i}' is not a yacs option key (options are KEY VALUE pairs such as OPTIM.MAX_EPOCH 5)"
        [ "${!i}" != DATASET.NUM_SHOTS ] ||
            die "set the shots with SHOTS=N (or SHOTS=all), not DATASET.NUM_SHOTS: the run directories are named shots_\$SHOTS"
    done
}

check_environment() {
    [[ $SHOTS =~ ^([1-9][0-9]*|all)$ ]] || die "SHOTS must be a positive integer or all (every training image), not '$SHOTS'"
    [ -d "$DATA" ] || die "DATA_ROOT $DATA is not a directory (set DATA_ROOT to the datasets' root)"
}

BACKBONES="coop, cocoop, kgcoop, maple, ivlp, promptsrc or promptkd"

# coop|cocoop|kgcoop|maple|ivlp|promptsrc -> trainer class name
backbone_trainer() {
    case "$1" in
        coop) echo CoOp ;;
        cocoop) echo CoCoOp ;;
        kgcoop) echo KgCoOp ;;
        maple) echo MaPLe ;;
        ivlp) echo IVLP ;;
        promptsrc) echo PromptSRC ;;
        promptkd) echo PromptKD ;;
        *) die "unknown backbone '$1' (choose $BACKBONES)" ;;
    esac
}

# trainer -> config file of the DPC paper's base-to-new setting (Sec. 4.1: backbones at batch 32,
# DPC at batch 4 with K = 8 and otherwise the backbone's hyper-parameters). The paper has no batch-32
# setting for CoCoOp, KgCoOp and IVLP: their stage 1 is the backbone's own published config.
default_config() {
    case "$1" in
        CoOp) echo configs/trainers/CoOp/vit_b16_c4_ep20_batch32_lr35.yaml ;;
        MaPLe) echo configs/trainers/MaPLe/vit_b16_c2_ep20_batch32_2ctx.yaml ;;
        PromptSRC) echo configs/trainers/PromptSRC/vit_b16_c2_ep20_batch32_4+4ctx.yaml ;;
        CoCoOp) echo configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml ;;
        KgCoOp) echo configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml ;;
        IVLP) echo "configs/trainers/IVLP/vit_b16_c2_ep5_batch4_2+2ctx.yaml" ;;
        PromptKD) echo "configs/trainers/PromptKD/vit_b16_c2_ep20_batch32_4+4ctx.yaml" ;;
        DPC_CoOp) echo configs/trainers/DPC/CoOp/vit_b16_c4_ep20_batch4_lr35_top8.yaml ;;
        DPC_MaPLe) echo configs/trainers/DPC/MaPLe/vit_b16_c2_ep20_batch4_2ctx_top8.yaml ;;
        DPC_PromptSRC) echo configs/trainers/DPC/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx_top8.yaml ;;
        DPC_CoCoOp) echo configs/trainers/DPC/CoCoOp/vit_b16_c4_ep10_batch4_ctxv1_top8.yaml ;;
        DPC_KgCoOp) echo configs/trainers/DPC/KgCoOp/vit_b16_ep100_batch4_ctxv1_top8.yaml ;;
        DPC_IVLP) echo "configs/trainers/DPC/IVLP/vit_b16_c2_ep5_batch4_2+2ctx_top8.yaml" ;;
        DPC_PromptKD) echo "configs/trainers/DPC/PromptKD/vit_b16_c2_ep20_batch4_4+4ctx_top8.yaml" ;;
        # DePT's own configs (github Koorye/DePT, ExtrasLinearProbe*); PromptSRC's: its recipe with DePT's head (docs/dept.md)
        DePT_CoOp) echo configs/trainers/DePT/CoOp/vit_b16_ep10_bs4_lr35.yaml ;;
        DePT_CoCoOp) echo configs/trainers/DePT/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml ;;
        DePT_KgCoOp) echo configs/trainers/DePT/KgCoOp/vit_b16_ep10_ctxv1_bs4_lr35.yaml ;;
        DePT_MaPLe) echo configs/trainers/DePT/MaPLe/vit_b16_c2_ep10_batch4_2ctx.yaml ;;
        DePT_PromptSRC) echo "configs/trainers/DePT/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml" ;;
        *) die "no default config for trainer '$1'" ;;
    esac
}

# trainer -> config file for cross-dataset and domain generalisation: the backbone authors' cross-dataset config
# where they publish one (MaPLe, PromptSRC, PromptKD) and its DPC version; else the base-to-new setting
xd_config() {
    case "$1" in
        MaPLe) echo configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml ;;
        PromptSRC) echo "configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets.yaml" ;;
        DPC_MaPLe) echo configs/trainers/DPC/MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets_top8.yaml ;;
        DPC_PromptSRC) echo "configs/trainers/DPC/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets_top8.yaml" ;;
        PromptKD) echo "configs/trainers/PromptKD/vit_b16_c2_ep20_batch8_4+4ctx_cross_datasets.yaml" ;;
        DPC_PromptKD) echo "configs/trainers/DPC/PromptKD/vit_b16_c2_ep10_batch4_4+4ctx_lr26_cross_datasets_top8.yaml" ;;
        *) default_config "$1" ;;
    esac
}

# the paper's Table 2 targets: cross-dataset (10) and cross-domain (4, ImageNet's classes or a subset)
XD_TARGETS="caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat ucf101"
DG_TARGETS="imagenetv2 imagenet_sketch imagenet_a imagenet_r"

dataset_config() {
    check_dataset "$1"
    echo "configs/datasets/$1.yaml"
}

# run_path KIND DATASET TRAINER CONFIG_FILE SEED: a run directory. KIND is <protocol>/<side>: base2new/train_base,
# base2new/test_new, xd/train_source, xd/test_target or fewshot/train_all. A variant (an ablation row) sets TAG:
# its config directory is then <config>@<tag>, next to the untagged main setting.
run_path() {
    echo "$OUTPUT/$1/$2/shots_$SHOTS/$3/$(basename "$4" .yaml)${TAG:+@$TAG}/seed$5"
}

# DATASET.NUM_SHOTS of SHOTS (all: 0, every training image)
num_shots() {
    if [ "$SHOTS" = all ]; then echo 0; else echo "$SHOTS"; fi
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

# train_into KIND SUBSAMPLE DATASET TRAINER CONFIG_FILE SEED [opts...]: train on DATASET's SUBSAMPLE classes
# (base|all); the run's final test is its accuracy
train_into() {
    local kind=$1 subsample=$2 dataset=$3 trainer=$4 config=$5 seed=$6
    shift 6
    local dir data_config force=()
    dir=$(run_path "$kind" "$dataset" "$trainer" "$config" "$seed")
    data_config=$(dataset_config "$dataset")
    if [ "${FORCE:-0}" = 1 ]; then force=(--force); fi
    if [ -n "${CHECK_ONLY:-}" ]; then force=(--check-only); fi
    say "[$trainer] training in $dir"
    "$PYTHON" train.py --root "$DATA" --seed "$seed" --trainer "$trainer" "${force[@]}" \
        --dataset-config-file "$data_config" --config-file "$config" --output-dir "$dir" \
        DATASET.NUM_SHOTS "$(num_shots)" DATASET.SUBSAMPLE_CLASSES "$subsample" "$@" || refused "$trainer" "$dir"
}

# train_base DATASET TRAINER CONFIG_FILE SEED [opts...]: train on the base classes (its final test = base accuracy)
train_base() {
    train_into base2new/train_base base "$@"
}

# evaluate MODEL_KIND MODEL_DATASET KIND DATASET SUBSAMPLE TRAINER CONFIG_FILE SEED [opts...]: evaluate the finished
# training run (MODEL_KIND, MODEL_DATASET) on DATASET's SUBSAMPLE classes; EVAL_TAG (default TAG) tags the evaluation
evaluate() {
    local model_kind=$1 model_dataset=$2 kind=$3 dataset=$4 subsample=$5 trainer=$6 config=$7 seed=$8
    shift 8
    local model_dir dir epoch data_config force=()
    data_config=$(dataset_config "$dataset")
    model_dir=$(run_path "$model_kind" "$model_dataset" "$trainer" "$config" "$seed")
    dir=$(TAG=${EVAL_TAG-${TAG:-}} run_path "$kind" "$dataset" "$trainer" "$config" "$seed")
    if [ "${FORCE:-0}" = 1 ]; then force=(--force); fi
    local script=base2new_train.sh load=()
    [[ $model_kind != xd/* ]] || script=xd_train.sh
    if [ -n "${CHECK_ONLY:-}" ]; then
        force=(--check-only)  # before training: the model need not exist yet
    else
        [ -f "$model_dir/done.json" ] || die "no finished training run in $model_dir: run (or let finish) the matching $script first"
        epoch=$(last_epoch "$model_dir")
        load=(--load-epoch "$epoch")
        echo "[$trainer] testing $model_dir (epoch $epoch) on $dataset ($subsample classes) in $dir"
    fi
    "$PYTHON" train.py --root "$DATA" --seed "$seed" --trainer "$trainer" \
        --dataset-config-file "$data_config" --config-file "$config" --output-dir "$dir" \
        --model-dir "$model_dir" "${load[@]}" --eval-only "${force[@]}" \
        DATASET.NUM_SHOTS "$(num_shots)" DATASET.SUBSAMPLE_CLASSES "$subsample" "$@" || refused "$trainer" "$dir"
}

# test_new DATASET TRAINER CONFIG_FILE SEED [opts...]: evaluate the trained base run on the new classes
test_new() {
    evaluate base2new/train_base "$1" base2new/test_new "$1" new "${@:2}"
}

# stage1_options DATASET BACKBONE_TRAINER SEED [KIND]: sets STAGE1_OPTS, the DPC.* options pointing stage 2 at
# stage 1 (KIND: base2new/train_base by default; tagged with STAGE1_TAG)
stage1_options() {
    local config dir epoch
    config=${STAGE1_CONFIG:-$(default_config "$2")}
    dir=$(TAG=${STAGE1_TAG:-} run_path "${4:-base2new/train_base}" "$1" "$2" "$config" "$3")
    epoch=$(last_epoch "$dir")
    STAGE1_OPTS=(DPC.STAGE1_DIR "$dir" DPC.STAGE1_EPOCH "${epoch:--1}")
}

# PromptKD's teacher: PromptSRC on ViT-L/14, trained on the base classes once per dataset (seed TEACHER_SEED,
# default 1, as the published teachers: one per dataset) with TEACHER_CONFIG. Cross-dataset transfer trains it on
# all of ImageNet's classes instead (TEACHER_KIND xd/train_source, TEACHER_SUBSAMPLE all, set by xd_train.sh).
TEACHER_CONFIG=${TEACHER_CONFIG:-configs/trainers/PromptSRC/vit_l14_c2_ep20_batch8_4+4ctx.yaml}
TEACHER_SEED=${TEACHER_SEED:-1}
TEACHER_KIND=base2new/train_base
TEACHER_SUBSAMPLE=base

# promptkd_options DATASET: PromptKD's published distillation weight for DATASET (1000, the config's, or 200)
promptkd_options() {
    case "$1" in
        fgvc_aircraft|oxford_flowers|dtd) echo TRAINER.PROMPTKD.KD_WEIGHT 200.0 ;;
    esac
}

# promptkd_teacher train|find DATASET OPTS...: sets TEACHER_OPTS, the options naming PromptKD's teacher. Nothing
# to do when OPTS name one (TRAINER.PROMPTKD.TEACHER_DIR, e.g. a published teacher); otherwise the PromptSRC
# teacher run is trained (train; reused when finished) or must exist (find). It gets OPTS without the
# TRAINER.PROMPTKD.* ones, on the teacher's CLIP (TRAINER.PROMPTKD.TEACHER_NAME / TEACHER_PATH when given).
promptkd_teacher() {
    local action=$1 dataset=$2 name="" path="" dir epoch i
    shift 2
    local opts=() given=("$@")
    TEACHER_OPTS=()
    for ((i = 0; i < ${#given[@]}; i += 2)); do
        case "${given[i]}" in
            TRAINER.PROMPTKD.TEACHER_DIR) say "[PromptKD] teacher: ${given[i+1]}"; return 0 ;;
            TRAINER.PROMPTKD.TEACHER_NAME) name=${given[i+1]} ;;
            TRAINER.PROMPTKD.TEACHER_PATH) path=${given[i+1]} ;;
            TRAINER.PROMPTKD.*) ;;
            *) opts+=("${given[i]}" "${given[i+1]}") ;;
        esac
    done
    [ -z "$name" ] || opts+=(MODEL.BACKBONE.NAME "$name")
    opts+=(MODEL.BACKBONE.PATH "$path")
    dir=$(TAG="" run_path "$TEACHER_KIND" "$dataset" PromptSRC "$TEACHER_CONFIG" "$TEACHER_SEED")
    if [ "$action" = train ]; then
        say "[PromptKD] teacher: PromptSRC ($(basename "$TEACHER_CONFIG" .yaml)) on the $TEACHER_SUBSAMPLE classes, seed $TEACHER_SEED"
        TAG="" train_into "$TEACHER_KIND" "$TEACHER_SUBSAMPLE" "$dataset" PromptSRC "$TEACHER_CONFIG" "$TEACHER_SEED" "${opts[@]}"
    fi
    [ -n "${CHECK_ONLY:-}" ] || [ -f "$dir/done.json" ] || die "no finished PromptKD teacher in $dir: run scripts/dpc/base2new_train.sh $dataset <seed> promptkd first, or name a teacher with TRAINER.PROMPTKD.TEACHER_DIR"
    epoch=$(last_epoch "$dir")
    TEACHER_OPTS=(TRAINER.PROMPTKD.TEACHER_DIR "$dir" TRAINER.PROMPTKD.TEACHER_EPOCH "${epoch:--1}")
}

# What the DPC scripts run, for sweeps and ablations (environment; every one optional):
#   STEPS          a subset of "teacher stage1 stage2 test" (default: all; PromptKD's teacher is then only looked up)
#   STAGE1_TAG     tag of the stage-1 run (run_path); STAGE1_EXTRA: yacs options for stage 1 only, e.g. "OPTIM.MAX_EPOCH 10"
#   DPC_TAG        tag of the stage-2 run and its test; DPC_EXTRA: yacs options for stage 2 and its test
#   DPC_EVAL_TAG   tag of stage 2's test alone (default DPC_TAG); DPC_EVAL_EXTRA: yacs options for that test only
# Options in the *_EXTRA variables are separated by spaces, so a list value is written without them: "[0.0,1e-6]".
check_stage_environment() {
    local step name
    for step in ${STEPS:-}; do
        case "$step" in teacher|stage1|stage2|test) ;; *) die "STEPS: unknown step '$step' (choose from: teacher stage1 stage2 test)" ;; esac
    done
    for name in STAGE1_TAG DPC_TAG DPC_EVAL_TAG; do
        [[ -z "${!name:-}" || "${!name}" =~ ^[A-Za-z0-9._+-]+$ ]] || die "$name '${!name}' may only hold letters, digits and . _ + -"
    done
    read -r -a STAGE1_EXTRA_OPTS <<< "${STAGE1_EXTRA:-}"
    read -r -a DPC_EXTRA_OPTS <<< "${DPC_EXTRA:-}"
    read -r -a DPC_EVAL_EXTRA_OPTS <<< "${DPC_EVAL_EXTRA:-}"
    check_opts "${STAGE1_EXTRA_OPTS[@]}"
    check_opts "${DPC_EXTRA_OPTS[@]}"
    check_opts "${DPC_EVAL_EXTRA_OPTS[@]}"
}

# refused TRAINER DIR: a failed train.py stops the script (set -e); in the checking pass, say which step it was
refused() {
    local status=$?
    [ -z "${CHECK_ONLY:-}" ] || echo "error: [$1] the options of the step that would run in $2 were refused; no step has run" >&2
    exit "$status"
}

# checked STEPS_FUNCTION: run the function twice, first with CHECK_ONLY=1: train.py --check-only checks the
# resolved options of every stage it would run (no torch: about a second each), so that a bad value for a later
# stage stops the script before the first one trains
checked() {
    CHECK_ONLY=1 "$1"
    echo "Options of every stage checked (train.py --check-only)."
    "$1"
}

# step NAME: true when STEPS (default: every step) holds NAME
step() {
    [[ " ${STEPS:-teacher stage1 stage2 test} " == *" $1 "* ]]
}

# parse_run_args USAGE CHOICES NAMES ARGS...: checks DATASET SEED [backbone] [yacs options...], the backbone one of
# CHOICES (coop|maple|...; default coop, NAMES lists them in messages), and sets DATASET, SEED, TRAINER (the backbone's
# trainer) and REST (the trailing yacs options)
parse_run_args() {
    local usage=$1 choices=$2 names=$3
    shift 3
    [ "$#" -ge 2 ] || die "usage: $usage"
    DATASET=$1 SEED=$2
    shift 2
    check_dataset "$DATASET"
    check_seed "$SEED"
    local backbone=coop
    if [[ -n "${1:-}" && "|$choices|" == *"|$1|"* ]]; then
        backbone=$1
        shift
    elif [[ -n "${1:-}" && "$1" != *.* ]]; then  # else yacs options follow
        die "unknown backbone '$1' (choose $names)"
    fi
    check_opts "$@"
    TRAINER=$(backbone_trainer "$backbone")
    REST=("$@")
}

# parse_dpc_args USAGE ARGS...: checks every argument, then sets DATASET, SEED, TRAINER (from an optional
# coop|cocoop|kgcoop|maple|ivlp|promptsrc|promptkd), STAGE1_CONFIG, DPC_CONFIG and the OPTS array (the trailing yacs
# options) for the scripts in scripts/dpc/
parse_dpc_args() {
    parse_run_args "$1" "coop|cocoop|kgcoop|maple|ivlp|promptsrc|promptkd" "$BACKBONES" "${@:2}"
    STAGE1_CONFIG=${STAGE1_CONFIG:-$(${CONFIG_OF:-default_config} "$TRAINER")}
    DPC_CONFIG=${DPC_CONFIG:-$(${CONFIG_OF:-default_config} "DPC_$TRAINER")}
    check_config "$STAGE1_CONFIG"
    check_config "$DPC_CONFIG"
    [ "$TRAINER" != PromptKD ] || check_config "$TEACHER_CONFIG"
    check_environment
    check_stage_environment
    # EuroSAT has 5 base classes, fewer than the paper's K = 8: use K = 5 there (the options can override it)
    OPTS=()
    [ "$DATASET" = eurosat ] && OPTS=(DPC.TOPK 5)
    [ "$TRAINER" != PromptKD ] || OPTS+=($(promptkd_options "$DATASET"))
    OPTS+=("${REST[@]}")
}

# parse_dept_args USAGE ARGS...: checks every argument, then sets DATASET, SEED, TRAINER (DePT_<Backbone>, from an
# optional coop|cocoop|kgcoop|maple|promptsrc), CONFIG (DEPT_CONFIG, else DePT's) and the OPTS array (the trailing
# yacs options) for the scripts in scripts/dept/
parse_dept_args() {
    parse_run_args "$1" "coop|cocoop|kgcoop|maple|promptsrc" "coop, cocoop, kgcoop, maple or promptsrc" "${@:2}"
    TRAINER=DePT_$TRAINER
    CONFIG=${DEPT_CONFIG:-$(default_config "$TRAINER")}
    check_config "$CONFIG"
    check_environment
    OPTS=("${REST[@]}")
}

# backbone_main train|test TRAINER SCRIPT_NAME DATASET SEED [opts...]: body of scripts/<backbone>/*.sh
backbone_main() {
    local action=$1 trainer=$2 name=$3
    shift 3
    [ "$#" -ge 2 ] || die "usage: bash $name DATASET SEED [yacs options...]"
    local dataset=$1 seed=$2
    shift 2
    check_dataset "$dataset"
    check_seed "$seed"
    check_opts "$@"
    local config
    config=${CONFIG:-$(default_config "$trainer")}
    check_config "$config"
    check_environment
    if [ "$trainer" = PromptKD ]; then
        check_config "$TEACHER_CONFIG"
        set -- $(promptkd_options "$dataset") "$@"
        promptkd_teacher "$action" "$dataset" "$@"
        set -- "$@" "${TEACHER_OPTS[@]}"
    fi
    if [ "$action" = train ]; then
        train_base "$dataset" "$trainer" "$config" "$seed" "$@"
    else
        test_new "$dataset" "$trainer" "$config" "$seed" "$@"
    fi
}
