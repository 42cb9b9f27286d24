"""MODEL.CHECKPOINT_TEXT with real Dassl: the text tower's blocks run again in the backward pass (activation
checkpointing) and the loss and every gradient are those without it, for CoOp's stage 1 and the DPC stage 2 of
CoOp and MaPLe (deep text prompts). PromptKD's teacher text tower: tests/test_promptkd_dassl.py."""
import pytest
import torch

pytest.importorskip("dassl")

from tests.test_dpc_step import build  # noqa: E402
from tests.test_dpc_text_classes import STAGES, assert_same_step, one_step, stage2, workspace  # noqa: E402,F401
from trainers.encoders import TextEncoder, checkpoint_text  # noqa: E402


def block_runs(encoders):
    """The calls of the first block of each text encoder with gradients on (hooks to remove)."""
    runs = []
    handles = [e.transformer.resblocks[0].register_forward_pre_hook(lambda *a: runs.append(1) if torch.is_grad_enabled()
                                                                     else None) for e in encoders]
    return runs, handles


def test_coop_stage1_is_the_same_with_checkpointing(workspace, tmp_path):
    coop = build(workspace, "CoOp", STAGES["CoOp"][0], tmp_path, "MODEL.CHECKPOINT_TEXT", "True")
    encoders = [m for m in coop.model.modules() if isinstance(m, TextEncoder)]
    assert encoders and all(e.checkpoint for e in encoders)
    batch = next(iter(coop.train_loader_x))
    images, labels = coop.parse_batch_train(batch)
    coop.set_model_mode("train")
    params = [p for p in coop.model.parameters() if p.requires_grad]
    results = []
    for on in (True, False):
        checkpoint_text(coop.model, on)
        runs, handles = block_runs(encoders)
        loss, _ = coop.compute_loss(images, labels)
        grads = torch.autograd.grad(loss, params)
        for h in handles:
            h.remove()
        assert len(runs) == (2 if on else 1)  # forward, and again in the backward pass when checkpointed
        results.append((loss.detach(), grads))
    assert torch.equal(results[0][0], results[1][0])
    for with_it, without in zip(results[0][1], results[1][1]):
        assert (with_it - without).abs().max() <= 1e-6 * without.abs().max()


@pytest.mark.parametrize("name", ["CoOp", "MaPLe"])
def test_dpc_stage2_is_the_same_with_checkpointing(workspace, tmp_path, name):
    dpc = stage2(workspace, tmp_path, name, "MODEL.CHECKPOINT_TEXT", "True")
    encoders = [m for m in dpc.dpc_net.modules() if isinstance(m, TextEncoder)]
    assert encoders and all(e.checkpoint for e in encoders)
    batch = next(iter(dpc.train_loader_x))
    images, labels = batch["img"], batch["label"]
    pairs = dpc.dpc_batch(images, labels)  # stage-1 scoring runs without gradients: no checkpointing there
    runs, handles = block_runs(encoders)
    checkpointed = one_step(dpc, images, labels, pairs, encoders, "auto")
    for h in handles:
        h.remove()
    assert len(runs) == 2
    checkpoint_text(dpc.dpc_net, False)
    assert_same_step(checkpointed, one_step(dpc, images, labels, pairs, encoders, "auto"))
