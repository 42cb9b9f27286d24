"""DPC on our CoCoOp, KgCoOp and IVLP with real Dassl, in this process: stage 1, stage 2 on the base classes,
then the saved DPC model on the new classes with w_n = 0 gives the backbone's stage-1 logits exactly."""
import pytest
import torch

pytest.importorskip("dassl")

from tests._backbone_e2e import base_to_new, build_trainer, make_workspace  # noqa: E402

BACKBONES = {
    "CoCoOp": ("configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml",
               "configs/trainers/DPC/CoCoOp/vit_b16_c4_ep10_batch4_ctxv1_top8.yaml"),
    "KgCoOp": ("configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml",
               "configs/trainers/DPC/KgCoOp/vit_b16_ep100_batch4_ctxv1_top8.yaml"),
    "IVLP": ("configs/trainers/IVLP/vit_b16_c2_ep5_batch4_2+2ctx.yaml",
             "configs/trainers/DPC/IVLP/vit_b16_c2_ep5_batch4_2+2ctx_top8.yaml"),
}
TINY = {"CoCoOp": [], "KgCoOp": ["DATALOADER.TRAIN_X.BATCH_SIZE", "4"],
        "IVLP": ["TRAINER.IVLP.PROMPT_DEPTH_TEXT", "2", "TRAINER.IVLP.PROMPT_DEPTH_VISION", "2"]}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("dpc_backbones"))


def logits(trainer, images):
    trainer.set_model_mode("eval")
    with torch.no_grad():
        return trainer.model_inference(images.to(trainer.device))


@pytest.mark.parametrize("name", list(BACKBONES))
def test_dpc_version_trains_and_keeps_the_backbones_new_class_logits(workspace, tmp_path, name):
    config, dpc_config = BACKBONES[name]
    _, new, _, _ = base_to_new(workspace, name, config, tmp_path / "stage1", *TINY[name])
    dpc = build_trainer(workspace, f"DPC_{name}", dpc_config, tmp_path / "stage2", "DATASET.SUBSAMPLE_CLASSES",
                        "base", "DPC.STAGE1_DIR", str(tmp_path / "stage1"), "DPC.TOPK", "2", *TINY[name])
    losses = []
    step = dpc.forward_backward
    dpc.forward_backward = lambda batch: losses.append(step(batch)) or losses[-1]
    dpc.train()
    sites = dpc.dpc_capture.sites
    assert sites.conditioned == (name == "CoCoOp") and sites.frozen_image == (name != "IVLP")
    assert losses and all("loss_cl" in l for l in losses)
    if name == "CoCoOp":  # batch 1: the two other base classes are free, so every step has negatives
        assert all(l["pairs"] > 1 for l in losses)
    if name == "KgCoOp":  # the knowledge-guided term runs in parallel with L_CL
        assert all("kg" in l and l["loss"] == pytest.approx(l["loss_cl"] + l["kg"], rel=1e-5) for l in losses)
    evaluator = build_trainer(workspace, f"DPC_{name}", dpc_config, tmp_path / "test_new", "DATASET.SUBSAMPLE_CLASSES",
                              "new", "DPC.W_NEW", "0.0", *TINY[name])
    evaluator.load_model(str(tmp_path / "stage2"), epoch=1)
    images = next(iter(new.test_loader))["img"]
    assert torch.equal(logits(evaluator, images), logits(new, images))
