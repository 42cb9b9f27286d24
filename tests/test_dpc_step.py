"""The DPC stage-2 step (feature capture in the backbone's forward, prompt modes listed once, module flags set
directly, the loss and Dassl's update) against the same step restated by hand on a copy of the model: the
parameters agree bit for bit after every step, for CoOp (reused anchors, gradient x 1/w_b), MaPLe (prompted
image tower) and PromptSRC (its terms added in parallel). The step runs with DPC.TEXT_CLASSES all, as restated
here; the step over the pairs' classes equals it to 1e-6 (tests/test_dpc_text_classes.py)."""
import copy
import os

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("dassl")

from bench.dpc_step import CONFIGS  # noqa: E402  (stage 1, stage 2, prompt-depth keys per backbone)
from tests.conftest import ROOT  # noqa: E402
from tools.synthetic_data import make_dataset  # noqa: E402
from tools.tiny_clip import save_tiny_clip  # noqa: E402
from trainers.dpc import decoupling  # noqa: E402


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("dpc_step")
    make_dataset(str(root / "data"), "dtd", n_classes=12, train_per_class=2, val_per_class=1, test_per_class=1)
    return {"root": root, "clip": save_tiny_clip(str(root / "tiny.pt"))}


def build(workspace, trainer, config, out, *opts):
    import train

    args = train.parse_args([
        "--root", str(workspace["root"] / "data"), "--seed", "1", "--trainer", trainer,
        "--dataset-config-file", os.path.join(ROOT, "configs/datasets/dtd.yaml"),
        "--config-file", os.path.join(ROOT, config), "--output-dir", str(out),
        "MODEL.BACKBONE.NAME", "custom", "MODEL.BACKBONE.PATH", workspace["clip"], "INPUT.SIZE", "(32,32)",
        "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base", *opts])
    return train.build(train.setup_cfg(args))


def restated_step(dpc, model, optim, images, negatives, labels, anchors):
    """One step of ``model`` (a copy of the DPC model) written out: its own encoders in train mode, L_CL by hand
    (plus the backbone's terms on the anchors), backward, the optimizer's step."""
    n = len(images)
    if anchors is not None:  # CoOp: the anchors' stage-1 features, then the negatives'
        with torch.no_grad(), decoupling.mode(model, "stage1"):
            assert torch.equal(model.encode_image(images), anchors)
        image = torch.cat([anchors, model.encode_image(negatives)])
    else:
        image = model.encode_image(torch.cat([images, negatives]))
    text = model.encode_text()
    image_n, text_n = F.normalize(image, dim=-1), F.normalize(text, dim=-1)[labels]
    logits = model.logit_scale.exp() * image_n @ text_n.t()
    targets = torch.arange(len(labels))
    loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2
    terms = getattr(dpc, "regularization_terms", None)
    for term in (terms(images, image[:n], text) if terms else {}).values():
        loss = loss + term
    optim.zero_grad()
    loss.backward()
    optim.step()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_step_is_the_restated_step_bit_for_bit(workspace, tmp_path, name):
    config1, config2, depth_keys = CONFIGS[name]
    depth = [x for key in depth_keys for x in (key, "2")]
    build(workspace, name, config1, tmp_path / "stage1", *depth).save_model(0, str(tmp_path / "stage1"))
    dpc = build(workspace, f"DPC_{name}", config2, tmp_path / "stage2", "DPC.STAGE1_DIR", str(tmp_path / "stage1"),
                "DPC.STAGE1_EPOCH", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "2", "DPC.TOPK", "3", "OPTIM.LR", "0.5",
                "OPTIM.WARMUP_EPOCH", "0", "DPC.TEXT_CLASSES", "all", *depth)  # restated over all classes
    dpc.before_train()
    dpc.set_model_mode("train")
    dpc.batch_idx, dpc.num_batches = 0, 10  # no epoch end in between
    model = copy.deepcopy(dpc.dpc_net)
    group = dpc.optim.param_groups[0]
    names = {id(p): n for n, p in dpc.dpc_net.named_parameters()}
    trained = [names[id(p)] for p in group["params"]]  # the optimizer's order
    assert sorted(trained) == sorted(n for n, p in dpc.dpc_net.named_parameters() if p.requires_grad)
    params = dict(model.named_parameters())
    optim = type(dpc.optim)([params[n] for n in trained], **{k: group[k] for k in dpc.optim.defaults})
    assert group["momentum"] > 0 and group["weight_decay"] > 0

    pairs = []
    sample = dpc.dpc_batch
    dpc.dpc_batch = lambda images, labels: pairs.append(sample(images, labels)) or pairs[-1]
    batches = iter(dpc.train_loader_x)
    reused = dpc.dpc_capture.can_reuse_anchors()
    assert reused == (name == "CoOp")  # only CoOp's image tower has no prompt
    for _ in range(2):
        batch = next(batches)
        dpc.forward_backward(batch)
        negatives, labels, anchors = pairs[-1]
        assert len(negatives) > 0
        restated_step(dpc, model, optim, batch["img"], negatives, labels, anchors if reused else None)
        ours = dict(dpc.dpc_net.named_parameters())
        for n in trained:
            assert torch.equal(ours[n], params[n]), n
    assert decoupling.get_mode(dpc.dpc_net) == "train" and dpc.dpc_net.training


@pytest.mark.parametrize("name", ["CoOp", "PromptSRC"])
def test_our_backbones_epoch_end_without_the_replay_is_the_replay(workspace, tmp_path, monkeypatch, name):
    """Our backbones' forward_backward only steps the schedule at epoch end, so stage 2 does not replay it: two
    epochs leave the same tensors, optimizer and schedule state and random state as with the replay."""
    from dassl.utils import set_random_seed

    from trainers.base import PromptTrainer
    from trainers.dpc import replay

    config1, config2, depth_keys = CONFIGS[name]
    depth = [x for key in depth_keys for x in (key, "2")]
    build(workspace, name, config1, tmp_path / "stage1", *depth).save_model(0, str(tmp_path / "stage1"))

    def two_epochs(out):
        set_random_seed(1)  # as train.py's main does before building
        dpc = build(workspace, f"DPC_{name}", config2, tmp_path / out, "DPC.STAGE1_DIR", str(tmp_path / "stage1"),
                    "DPC.STAGE1_EPOCH", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DPC.TOPK", "2",
                    "OPTIM.MAX_EPOCH", "2", "OPTIM.WARMUP_EPOCH", "1", "TEST.NO_TEST", "True", *depth)
        dpc.train()
        return ({k: v.clone() for k, v in dpc.dpc_net.state_dict().items()}, dpc.optim.state_dict(),
                dpc.sched.state_dict(), torch.get_rng_state(), dpc.dpc_sampler.rng.getstate())

    assert not replay.replay_needed(PromptTrainer.forward_backward)
    skipped = two_epochs("skipped")
    monkeypatch.setattr(PromptTrainer.forward_backward, replay.ONLY_UPDATES_LR, False)
    replayed = two_epochs("replayed")
    state, optim, sched, rng, sampler_rng = skipped
    assert state.keys() == replayed[0].keys() and all(torch.equal(v, replayed[0][k]) for k, v in state.items())
    assert str(optim) == str(replayed[1]) and sched == replayed[2]
    assert sched["_last_lr"] == pytest.approx([sched["base_lrs"][0] / 2])  # warm-up, then half the cosine: 2 steps
    assert torch.equal(rng, replayed[3]) and sampler_rng == replayed[4]
