"""Damaged files and mismatching settings stop train.py before training, naming the file and the fix."""
import json
import subprocess
import sys

import pytest
import torch

pytest.importorskip("dassl")

from dassl.config import get_cfg_default  # noqa: E402
from dassl.data.data_manager import DatasetWrapper  # noqa: E402
from dassl.data.datasets import Datum  # noqa: E402
from dassl.utils import torchtools  # noqa: E402

from tests.conftest import ROOT  # noqa: E402
from tests.test_file_errors import cut, damage_scan_data, eurosat_image  # noqa: E402
from tools.synthetic_data import make_dataset  # noqa: E402
from tools.tiny_clip import save_tiny_clip  # noqa: E402
from trainers.dpc import dassl_compat  # noqa: E402
from trainers.dpc.checkpoint import atomic_save  # noqa: E402
from trainers.dpc.image_files import IMAGE_HINT, ImageFileError  # noqa: E402

dassl_compat.apply()

COOP = "configs/trainers/CoOp/vit_b16_c4_ep20_batch32_lr35.yaml"


def test_dassl_data_loader_names_a_damaged_image(tmp_path):
    """Images the up-front check cannot see (e.g. damaged later) still fail naming the file."""
    dataset_dir = make_dataset(tmp_path, "eurosat", n_classes=2, image_size=64)
    path = cut(eurosat_image(dataset_dir, "Forest", 1))
    cfg = get_cfg_default()
    cfg.INPUT.SIZE = (32, 32)
    wrapper = DatasetWrapper(cfg, [Datum(impath=path, label=1, classname="Forest")])
    with pytest.raises(ImageFileError) as err:
        wrapper[0]
    assert str(err.value).startswith(f"cannot read image {path} (OSError: image file is truncated")
    assert IMAGE_HINT in str(err.value)


def test_resuming_from_a_truncated_checkpoint_says_how_to_go_back_an_epoch(tmp_path):
    path = str(tmp_path / "prompt_learner" / "model.pth.tar-3")
    atomic_save({"state_dict": {"ctx": torch.zeros(2, 8)}, "epoch": 3}, path)
    assert torchtools.load_checkpoint(path)["epoch"] == 3
    cut(path)
    with pytest.raises(ValueError) as err:
        torchtools.load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"cannot resume from checkpoint {path} (RuntimeError: ")
    assert f"into {tmp_path / 'prompt_learner' / 'checkpoint'} to resume from there" in message


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("file_errors")
    make_dataset(str(root / "data"), "eurosat", n_classes=4, train_per_class=2, image_size=64)
    return {"root": root, "tiny": save_tiny_clip(str(root / "tiny.pt")),
            "wide": save_tiny_clip(str(root / "wide.pt"), width=128)}


def train_coop(workspace, out, *opts):
    """train.py with CoOp on the tiny data: (exit code, stdout, stderr)."""
    cmd = [sys.executable, "train.py", "--root", str(workspace["root"] / "data"), "--seed", "1",
           "--trainer", "CoOp", "--dataset-config-file", "configs/datasets/eurosat.yaml", "--config-file", COOP,
           "--output-dir", str(workspace["root"] / out), "DATASET.NUM_SHOTS", "2", "INPUT.SIZE", "(32,32)",
           "DATALOADER.NUM_WORKERS", "0", "OPTIM.MAX_EPOCH", "1", *opts]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert "epoch [" not in proc.stdout, "training started"
    return proc.returncode, proc.stdout, proc.stderr


def test_clip_file_of_another_architecture_stops_train_py(workspace):
    """A width-128 tiny ViT under the config's MODEL.BACKBONE.NAME ViT-B/16."""
    code, _, stderr = train_coop(workspace, "wide", "MODEL.BACKBONE.PATH", workspace["wide"])
    assert code != 0
    assert f"{workspace['wide']} holds a CLIP ViT, width 128, 4 layers, patch 16, 32 px" in stderr
    assert "but MODEL.BACKBONE.NAME ViT-B/16 is a ViT, width 768, 12 layers, patch 16, 224 px" in stderr
    assert "MODEL.BACKBONE.NAME custom" in stderr


def test_wrong_input_size_stops_coop_before_training(workspace):
    code, _, stderr = train_coop(workspace, "size", "MODEL.BACKBONE.NAME", "custom", "MODEL.BACKBONE.FIT_CUSTOM",
                                 "False", "MODEL.BACKBONE.PATH", workspace["tiny"], "INPUT.SIZE", "(64,64)")
    assert code == 2 and "Traceback" not in stderr  # an error of ours: one line
    assert stderr.count("\n") == 1 and stderr.startswith("error: ")
    assert (f"INPUT.SIZE is (64, 64) but the CLIP image encoder of {workspace['tiny']} takes 32x32 images"
            in stderr) and 'set INPUT.SIZE "(32, 32)"' in stderr


def test_damaged_train_and_test_images_stop_train_py_before_training(workspace):
    dataset_dir = workspace["root"] / "data" / "eurosat"
    train = cut(eurosat_image(dataset_dir, "Forest", 1))
    test = cut(eurosat_image(dataset_dir, "AnnualCrop", 4))
    try:
        code, _, stderr = train_coop(workspace, "images", "MODEL.BACKBONE.NAME", "custom",
                                     "MODEL.BACKBONE.PATH", workspace["tiny"])
    finally:
        make_dataset(str(workspace["root"] / "data"), "eurosat", n_classes=4, train_per_class=2, image_size=64)
    assert code != 0
    assert "2 of " in stderr and "image files cannot be read" in stderr
    assert f"{train} (OSError: image file is truncated" in stderr and f"{test} (OSError" in stderr
    assert IMAGE_HINT in stderr


def eurosat_dataset(root, *opts):
    """Dassl's EuroSAT (registered by datasets.register) on the data under ``root``: 2 shots, then ``opts``."""
    import datasets
    from dassl.data.datasets import build_dataset
    from trainers.config import extend_cfg

    datasets.register()
    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.merge_from_file(f"{ROOT}/configs/datasets/eurosat.yaml")
    cfg.merge_from_list(["DATASET.ROOT", str(root), "DATASET.NUM_SHOTS", "2", "SEED", "1", *opts])
    return build_dataset(cfg)


def test_a_training_jpeg_damaged_inside_stops_the_run_or_is_named_in_done_json(workspace):
    data = workspace["root"] / "data"
    damaged = damage_scan_data(eurosat_image(data / "eurosat", "Forest", 1))
    try:
        with pytest.raises(ImageFileError) as err:
            eurosat_dataset(data)
        assert str(err.value).startswith("1 training images hold damaged JPEG data")
        assert f"{damaged} (Corrupt JPEG data: " in str(err.value) and "DATASET.IMAGE_WARNINGS warn" in str(err.value)
        out = workspace["root"] / "warned"
        proc = subprocess.run(
            [sys.executable, "train.py", "--root", str(data), "--seed", "1", "--trainer", "CoOp",
             "--dataset-config-file", "configs/datasets/eurosat.yaml", "--config-file", COOP, "--output-dir", str(out),
             "DATASET.NUM_SHOTS", "2", "DATASET.IMAGE_WARNINGS", "warn", "DATALOADER.NUM_WORKERS", "0",
             "OPTIM.MAX_EPOCH", "1", "MODEL.BACKBONE.NAME", "custom", "MODEL.BACKBONE.PATH", workspace["tiny"]],
            cwd=ROOT, capture_output=True, text=True, timeout=600)
    finally:
        make_dataset(str(data), "eurosat", n_classes=4, train_per_class=2, image_size=64)
    assert proc.returncode == 0, proc.stderr
    assert "WARNING: 1 training images hold damaged JPEG data" in proc.stdout and damaged in proc.stdout
    assert json.loads((out / "done.json").read_text())["image_warnings"] == [damaged]
