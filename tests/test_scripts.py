"""The experiment scripts check their arguments before anything runs, and train.py's quiet terminal (no Dassl)."""
import io
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from trainers import console

DATASETS_HINT = "choose one of: caltech101 dtd eurosat"


@pytest.fixture
def env(tmp_path):
    (tmp_path / "data").mkdir()
    return dict(os.environ, DATA_ROOT=str(tmp_path / "data"), OUTPUT_ROOT=str(tmp_path / "output"),
                DEMO_ROOT=str(tmp_path / "demo"), SHOTS="4", PYTHON=sys.executable)


def bash(env, script, *args, **extra):
    start = time.monotonic()
    proc = subprocess.run(["bash", script, *args], cwd=ROOT, env=dict(env, **extra), capture_output=True,
                          text=True, timeout=60)
    return proc, time.monotonic() - start


@pytest.mark.parametrize("script, args, extra, message", [
    ("scripts/dpc/base2new_train.sh", ["eurosatt", "1"], {}, f"unknown dataset 'eurosatt' ({DATASETS_HINT}"),
    ("scripts/dpc/base2new_train.sh", ["eurosat", "one"], {}, "seed must be a positive integer, not 'one'"),
    ("scripts/dpc/base2new_train.sh", ["eurosat", "0"], {}, "seed must be a positive integer, not '0'"),
    ("scripts/dpc/base2new_train.sh", ["eurosat", "1", "mapel"], {},
     "unknown backbone 'mapel' (choose coop, cocoop, kgcoop, maple, ivlp, promptsrc or promptkd)"),
    ("scripts/dpc/base2new_train.sh", ["eurosat", "1", "coop", "OPTIM.MAX_EPOCH"], {}, "KEY VALUE pairs"),
    ("scripts/dpc/base2new_train.sh", ["eurosat", "1"], {"STAGE1_CONFIG": "nowhere.yaml"},
     "config file not found: nowhere.yaml"),
    ("scripts/dpc/base2new_train.sh", ["eurosat", "1"], {"SHOTS": "sixteen"}, "SHOTS must be a positive integer"),
    ("scripts/dpc/base2new_train.sh", ["eurosat", "1"], {"SHOTS": "0"}, "SHOTS must be a positive integer or all"),
    ("scripts/dpc/base2new_train.sh", ["eurosat", "1", "coop", "DATASET.NUM_SHOTS", "0"], {},
     "set the shots with SHOTS=N (or SHOTS=all), not DATASET.NUM_SHOTS"),
    ("scripts/coop/base2new_train.sh", ["eurosat", "1", "DATASET.NUM_SHOTS", "-1"], {}, "not DATASET.NUM_SHOTS"),
    ("scripts/dpc/base2new_train.sh", ["eurosat", "1"], {"DATA_ROOT": "/nowhere"},
     "DATA_ROOT /nowhere is not a directory"),
    ("scripts/dpc/base2new_test.sh", ["oxford_pet", "1"], {}, f"unknown dataset 'oxford_pet' ({DATASETS_HINT}"),
    ("scripts/dpc/base2new_seeds.sh", ["eurosat"], {"SEEDS": "1 2 x"}, "seed must be a positive integer, not 'x'"),
    ("scripts/dpc/base2new_seeds.sh", ["eurosat", "promtsrc"], {}, "unknown backbone 'promtsrc'"),
    ("scripts/coop/base2new_train.sh", ["eurosatt", "1"], {}, "unknown dataset 'eurosatt'"),
    ("scripts/coop/base2new_train.sh", ["eurosat", "1", "maple"], {}, "KEY VALUE pairs; got an odd number"),
    ("scripts/coop/base2new_train.sh", ["eurosat", "1", "maple", "OPTIM.LR"], {},
     "'maple' is not a yacs option key"),
    ("scripts/maple/base2new_test.sh", ["eurosat", "1.5"], {}, "seed must be a positive integer, not '1.5'"),
    ("scripts/promptsrc/base2new_train.sh", ["../eurosat", "1"], {}, "unknown dataset '../eurosat'"),
    ("scripts/coop/base2new_train.sh", ["eurosat", "1"], {"CONFIG": "nowhere.yaml"}, "config file not found"),
    ("scripts/dpc/demo.sh", ["mapel"], {}, "unknown backbone 'mapel'"),
    ("scripts/dpc/base2new_train.sh", ["eurosat", "1"], {"STEPS": "stage1 stage3"}, "STEPS: unknown step 'stage3'"),
    ("scripts/dpc/base2new_train.sh", ["eurosat", "1"], {"DPC_TAG": "a/b"}, "DPC_TAG 'a/b' may only hold"),
    ("scripts/dpc/base2new_train.sh", ["eurosat", "1"], {"DPC_EXTRA": "DPC.W_BASE"}, "KEY VALUE pairs"),
    ("scripts/dpc/xd_train.sh", ["x"], {}, "seed must be a positive integer, not 'x'"),
    ("scripts/dpc/xd_train.sh", ["1"], {"TARGETS": "caltech101 imagenet_b"}, "unknown dataset 'imagenet_b'"),
    ("scripts/dpc/fewshot_train.sh", ["eurosat", "1", "promptkd"], {}, "PromptKD distils on every image"),
])
def test_bad_arguments_stop_the_scripts_at_once(env, tmp_path, script, args, extra, message):
    proc, seconds = bash(env, script, *args, **extra)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert seconds < 5  # bash checks only: nothing was started (typically ~0.01 s)
    assert not (tmp_path / "output").exists() and not (tmp_path / "demo").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


@pytest.mark.parametrize("backbone, trainer, stage1, stage2", [
    ("cocoop", "CoCoOp", "CoCoOp/vit_b16_c4_ep10_batch1_ctxv1", "DPC/CoCoOp/vit_b16_c4_ep10_batch4_ctxv1_top8"),
    ("kgcoop", "KgCoOp", "KgCoOp/vit_b16_ep100_ctxv1", "DPC/KgCoOp/vit_b16_ep100_batch4_ctxv1_top8"),
    ("ivlp", "IVLP", "IVLP/vit_b16_c2_ep5_batch4_2+2ctx", "DPC/IVLP/vit_b16_c2_ep5_batch4_2+2ctx_top8"),
])
def test_new_backbones_resolve_their_trainers_and_configs(env, backbone, trainer, stage1, stage2):
    """What base2new_train.sh DATASET SEED <backbone> runs, without running it (the scripts' own argument parsing)."""
    code = ('source scripts/lib.sh; parse_dpc_args usage "$@"; echo "$TRAINER $STAGE1_CONFIG $DPC_CONFIG ${OPTS[*]}"; '
            f'default_config {trainer}')
    proc = subprocess.run(["bash", "-c", code, "lib", "eurosat", "1", backbone, "OPTIM.LR", "0.1"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == [
        f"{trainer} configs/trainers/{stage1}.yaml configs/trainers/{stage2}.yaml DPC.TOPK 5 OPTIM.LR 0.1",
        f"configs/trainers/{stage1}.yaml"]
    for action in ("train", "test"):  # the per-backbone scripts exist, run, and check their arguments first
        proc, _ = bash(env, f"scripts/{backbone}/base2new_{action}.sh", "eurosatt", "1")
        assert proc.returncode == 2 and "unknown dataset 'eurosatt'" in proc.stderr, proc.stderr


def test_a_failure_inside_a_command_substitution_stops_a_script(env):
    # without inherit_errexit the subshell's failure is ignored and "reached" is printed
    code = 'source scripts/lib.sh; value=$(false; echo reached); echo "value=$value"'
    proc = subprocess.run(["bash", "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "value=" not in proc.stdout


def test_quiet_stream_passes_only_results_and_notices():
    terminal = io.StringIO()
    stream = console.QuietStream(terminal)
    stream.write("** System info **\nPyTorch version: 2.0\n")
    stream.write("epoch [1/2] batch [1/1] loss 1.0\n")
    stream.write("Found checkpoint at /x/prompt_learner (will resume training)\n")
    stream.write("=> result\n* total: 50\n* accur")  # a line may arrive in pieces
    stream.write("acy: 20.0%\n")
    stream.training = True  # e.g. a validation result between training steps
    stream.write("* accuracy: 30.0%\n")
    stream.training = False
    stream.write("Warning: m.pth does not record the classes it was trained on\nwarnings elsewhere\n")
    stream.write("DPC sweep results:\n  w_new=0: 20.00\nElapsed: 0:00:01\n* macro_f1: 6.7%")
    stream.close()
    assert terminal.getvalue().splitlines() == [
        "Found checkpoint at /x/prompt_learner (will resume training)", "=> result", "* total: 50",
        "* accuracy: 20.0%", "Warning: m.pth does not record the classes it was trained on",
        "DPC sweep results:", "  w_new=0: 20.00", "* macro_f1: 6.7%"]


@pytest.mark.parametrize("flag, value, verbose", [
    (False, None, False), (False, "1", True), (False, "0", False), (False, "", False), (True, None, True),
    (False, "yes", True), (False, "false", False)])
def test_verbose_switch(monkeypatch, flag, value, verbose):
    if value is None:
        monkeypatch.delenv(console.ENV, raising=False)
    else:
        monkeypatch.setenv(console.ENV, value)
    assert console.verbose_requested(flag) is verbose


def test_all_shots_are_named_in_the_run_directory_and_passed_as_zero(env):
    code = 'source scripts/lib.sh; check_environment; run_path base2new/train_base eurosat CoOp c.yaml 1; num_shots'
    proc = subprocess.run(["bash", "-c", code], cwd=ROOT, env=dict(env, SHOTS="all"), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == [f"{env['OUTPUT_ROOT']}/base2new/train_base/eurosat/shots_all/CoOp/c/seed1", "0"]


@pytest.mark.parametrize("classes, args, message", [
    (10, ["coop", "DPC.W_BASE", "1.5"], "DPC.W_BASE must be in (0, 1], got 1.5"),
    (10, ["maple", "DPC.W_NEW", "-0.5"], "DPC.W_NEW must be in [0, 1], got -0.5"),
    (3, ["coop"], "DPC.TOPK=5 must be between 1 and the number of base classes (2)"),  # the script's K for EuroSAT
    (2, ["coop", "DPC.TOPK", "2"], "DPC.TOPK=2 must be between 1 and the number of base classes (1)"),
    (10, ["promptsrc", "TRAINER.PROMPTSRC.PREC", "fp8"], "TRAINER.PROMPTSRC.PREC must be fp16, fp32 or amp"),
])
def test_a_later_stages_bad_option_stops_the_script_before_stage_1(env, tmp_path, classes, args, message):
    """Every stage's resolved options are checked (train.py --check-only, no torch) before the first step runs."""
    pytest.importorskip("dassl")  # train.py reads Dassl's default config
    from tools.synthetic_data import make_dataset

    make_dataset(str(tmp_path / "data"), "eurosat", n_classes=classes, train_per_class=1)
    proc, seconds = bash(env, "scripts/dpc/base2new_train.sh", "eurosat", "1", *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "the options of the step that would run in" in proc.stderr and "no step has run" in proc.stderr
    assert not (tmp_path / "output").exists()  # nothing trained, no run directory made
    assert seconds < 30  # four checks of about a second each (typically ~2 s in all)
