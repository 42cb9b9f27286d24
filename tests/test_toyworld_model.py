"""With the full pretrained toy CLIP (built once per machine: .ci/run makes it before the tests) on ToyWorld:
CoOp shows the base-new trade-off, tools/epoch_curve.py agrees with the trainer and with zero-shot CLIP,
and DPC with w_n = 0 predicts the new classes exactly as its stage 1 does."""
import json
import os

import pytest

from tests.conftest import ROOT
from tools.epoch_curve import TestSet, split_curve
from tools.pretrain_clip import ensure_pretrained, report_path
from tools.toyworld.dataset import write_toyworld
from tools.toyworld.options import toyworld_options

COOP = "configs/trainers/CoOp/vit_b16_c4_ep20_batch32_lr35.yaml"
DPC = "configs/trainers/DPC/CoOp/vit_b16_c4_ep20_batch4_lr35_top8.yaml"
EPOCHS = 20  # of stage 1, the config's (seed 1: base 62.08 -> 64.08, new 62.32 -> 59.76)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    weights = ensure_pretrained()
    root = tmp_path_factory.mktemp("toyworld")
    write_toyworld(str(root / "data"))
    with open(report_path(weights)) as f:
        zero_shot = json.load(f)["accuracy"]["downstream_test"]
    return {"root": root, "data": str(root / "data"), "opts": toyworld_options(weights), "zero_shot": zero_shot}


def build(world, trainer, config, out, subsample, *opts):
    import train

    args = train.parse_args([
        "--root", world["data"], "--seed", "1", "--trainer", trainer, "--output-dir", str(out),
        "--dataset-config-file", os.path.join(ROOT, "configs/datasets/toyworld.yaml"),
        "--config-file", os.path.join(ROOT, config), *world["opts"], "DATASET.NUM_SHOTS", "16",
        "DATASET.SUBSAMPLE_CLASSES", subsample, *opts])
    cfg = train.setup_cfg(args)
    from dassl.utils import set_random_seed

    set_random_seed(1)
    return cfg, train.build(cfg)


def predictions(trainer):
    accuracy = trainer.test()
    return accuracy, list(trainer.evaluator._y_pred)


@pytest.fixture(scope="module")
def stage1(world):
    """CoOp trained on the base classes for EPOCHS epochs, its run recorded as train.py does."""
    import train
    from trainers.dpc.files import atomic_write_text

    out = world["root"] / "coop"
    cfg, trainer = build(world, "CoOp", COOP, out, "base")
    trainer.train()  # ends with the base-class test
    base = train.final_accuracy(trainer)
    train.write_run_info(cfg)
    atomic_write_text(str(out / "done.json"), json.dumps({"finished": "now", "accuracy": base}))
    _, on_new = build(world, "CoOp", COOP, world["root"] / "coop_new", "new")
    on_new.load_model(str(out), epoch=EPOCHS)
    new, new_predictions = predictions(on_new)
    return {"dir": str(out), "base": base, "new": new, "new_predictions": new_predictions}


def test_coop_raises_base_above_zero_shot_and_lowers_new_below_it(world, stage1):
    zero = world["zero_shot"]
    assert stage1["base"] > zero["base"] + 1.0, (stage1, zero)
    assert stage1["new"] < zero["new"] - 1.0, (stage1, zero)


def test_epoch_curve_starts_at_zero_shot_and_ends_at_the_trainers_accuracy(world, stage1):
    base = split_curve(stage1["dir"], "base", [EPOCHS])
    new = split_curve(stage1["dir"], "new", [EPOCHS])
    # epoch 0: CoOp's initial prompt "a photo of a {class}." through Dassl on the files = zero-shot CLIP in memory
    assert base[0] == pytest.approx(world["zero_shot"]["base"], abs=0.01)
    assert new[0] == pytest.approx(world["zero_shot"]["new"], abs=0.01)
    assert base[EPOCHS] == pytest.approx(stage1["base"], abs=0.01)
    assert new[EPOCHS] == pytest.approx(stage1["new"], abs=0.01)


@pytest.mark.parametrize("trainer,config,image_features_kept", [
    ("CoOp", COOP, True),  # prompts on the text side only: image features computed once
    ("MaPLe", "configs/trainers/MaPLe/vit_b16_c2_ep20_batch32_2ctx.yaml", False),  # prompted image tower
])
def test_the_epoch_curves_cached_test_set_gives_the_trainers_own_accuracy(world, stage1, trainer, config,
                                                                          image_features_kept):
    _, model = build(world, trainer, config, world["root"] / f"cached_{trainer}", "new")
    test_set = TestSet(model)
    assert test_set.accuracy() == float(model.test())
    assert test_set.features is image_features_kept and len(test_set.batches) > 1
    if trainer == "CoOp":
        model.load_model(stage1["dir"], epoch=EPOCHS)  # another epoch's prompt: only the text side is recomputed
        assert test_set.accuracy() == float(model.test()) == stage1["new"]


def test_dpc_with_w_new_zero_predicts_new_classes_exactly_as_stage1(world, stage1):
    stage1_opts = ["DPC.STAGE1_DIR", stage1["dir"], "DPC.STAGE1_EPOCH", str(EPOCHS)]
    out = world["root"] / "dpc"
    _, dpc = build(world, "DPC_CoOp", DPC, out, "base", *stage1_opts, "OPTIM.MAX_EPOCH", "1",
                   "DATALOADER.TRAIN_X.BATCH_SIZE", "32")  # one short epoch: P' moves away from P
    dpc.train()
    _, on_new = build(world, "DPC_CoOp", DPC, world["root"] / "dpc_new", "new", "DPC.W_NEW", "0.0")
    on_new.load_model(str(out), epoch=1)
    accuracy, new_predictions = predictions(on_new)
    assert accuracy == stage1["new"] and new_predictions == stage1["new_predictions"]
    _, moved = build(world, "DPC_CoOp", DPC, world["root"] / "dpc_new1", "new", "DPC.W_NEW", "1.0")
    moved.load_model(str(out), epoch=1)
    assert predictions(moved)[1] != stage1["new_predictions"]  # with w_n = 1 the trained P' is used: it differs
