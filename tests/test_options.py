"""Option checks without torch (trainers/options.py): what train.py refuses at once, and --check-only."""
import io
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from trainers import console

pytest.importorskip("dassl")  # train.py reads Dassl's default config (yacs only)

from train import default_settings, parse_args, setup_cfg  # noqa: E402
from trainers.dpc.errors import ConfigError  # noqa: E402
from trainers.options import check_options, check_run  # noqa: E402


def cfg_of(*opts, trainer="DPC_CoOp", root="/nowhere"):
    config = "configs/trainers/DPC/CoOp/vit_b16_c4_ep20_batch4_lr35_top8.yaml"
    return setup_cfg(parse_args(["--root", root, "--seed", "1", "--trainer", trainer, "--dataset-config-file",
                                 f"{ROOT}/configs/datasets/eurosat.yaml", "--config-file", f"{ROOT}/{config}", *opts]))


def train_py(tmp_path, *args):
    return subprocess.run([sys.executable, "train.py", "--root", str(tmp_path), "--seed", "1", "--trainer", "CoOp",
                           "--dataset-config-file", "configs/datasets/eurosat.yaml", "--output-dir",
                           str(tmp_path / "out"), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("check_only", [True, False])
def test_negative_shots_are_refused_before_anything_runs(tmp_path, check_only):
    proc = train_py(tmp_path, *(["--check-only"] if check_only else []), "DATASET.NUM_SHOTS", "-1")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: DATASET.NUM_SHOTS must be >= 0, got -1 (N: N training images per class; "
                                  "0: every training image")
    assert not (tmp_path / "out").exists()


def test_all_images_are_the_default_and_are_said_so():
    assert default_settings()["DATASET.NUM_SHOTS"] == 0  # not Dassl's -1, which is refused
    terminal = io.StringIO()
    console.Console(verbose=True, terminal=terminal).header(cfg_of(), eval_only=False)
    assert terminal.getvalue().startswith("[train] DPC_CoOp on EuroSAT: all classes, all images, seed 1\n")
    assert console.shots_text(16) == "16 shots"


@pytest.mark.parametrize("opts, message", [
    (["DPC.W_BASE", "0.0"], "DPC.W_BASE must be in (0, 1]"),
    (["DPC.SWEEP_W_NEW", "[0.5,2.0]"], "DPC.W_NEW must be in [0, 1], got 2.0"),
    (["DPC.UPDATE", "fast"], "DPC.UPDATE must be one of ('release', 'frozen')"),
    (["DPC.TEXT_CLASSES", "some"], "DPC.TEXT_CLASSES must be one of ('auto', 'all', 'pairs'), got 'some'"),
    (["TRAINER.COOP.PREC", "bf16"], "TRAINER.COOP.PREC must be fp16, fp32 or amp"),
    (["DATASET.IMAGE_WARNINGS", "ignore"], "DATASET.IMAGE_WARNINGS must be one of ('error', 'warn')"),
])
def test_options_are_checked_without_reading_data(opts, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_options(cfg_of(*opts))


def test_check_only_reads_the_class_count_of_a_dpc_training_run_and_imports_no_torch(tmp_path):
    from tools.synthetic_data import make_dataset

    make_dataset(str(tmp_path), "eurosat", n_classes=6, train_per_class=1)
    check_run(cfg_of("DATASET.SUBSAMPLE_CLASSES", "base", "DPC.TOPK", "3", root=str(tmp_path)))
    with pytest.raises(ConfigError, match=r"DPC.TOPK=4 must be between 1 and the number of base classes \(3\)"):
        check_run(cfg_of("DATASET.SUBSAMPLE_CLASSES", "base", "DPC.TOPK", "4", root=str(tmp_path)))
    check_run(cfg_of("DATASET.SUBSAMPLE_CLASSES", "new", "DPC.TOPK", "4", root=str(tmp_path)), eval_only=True)
    code = ("import sys, runpy; sys.argv = ['train.py', '--check-only', '--root', sys.argv[1], '--trainer', 'DPC_CoOp', "
            "'--dataset-config-file', 'configs/datasets/eurosat.yaml', 'DATASET.SUBSAMPLE_CLASSES', 'base', "
            "'DPC.TOPK', '3']\n"
            "try:\n    runpy.run_path('train.py', run_name='__main__')\nexcept SystemExit as end:\n    assert not end.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
