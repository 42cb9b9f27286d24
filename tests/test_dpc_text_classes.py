"""DPC.TEXT_CLASSES with real Dassl: the stage-2 step that encodes only the text of its pairs' classes (auto,
pairs) gives the loss and the gradient of every trained tensor of the step over all base classes (all), fp32,
with at most L text rows encoded; all-class backbone terms (PromptSRC, KgCoOp) stay exact under auto and become
the terms of the step's classes under pairs. PromptKD's text copy: tests/test_promptkd_dassl.py."""
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("dassl")

from bench.dpc_step import CONFIGS  # noqa: E402
from tests.test_dpc_new_backbones import BACKBONES  # noqa: E402
from tests.test_dpc_step import build  # noqa: E402
from tools.synthetic_data import make_dataset  # noqa: E402
from tools.tiny_clip import save_tiny_clip  # noqa: E402
from trainers.encoders import TextEncoder  # noqa: E402

STAGES = {**{name: CONFIGS[name][:2] for name in ("CoOp", "MaPLe", "PromptSRC")}, **BACKBONES}
DEPTHS = {"MaPLe": ["TRAINER.MAPLE.PROMPT_DEPTH"], "PromptSRC": CONFIGS["PromptSRC"][2],
          "IVLP": ["TRAINER.IVLP.PROMPT_DEPTH_TEXT", "TRAINER.IVLP.PROMPT_DEPTH_VISION"]}
N_BASE = 12


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("text_classes")
    make_dataset(str(root / "data"), "dtd", n_classes=2 * N_BASE, train_per_class=2, val_per_class=1, test_per_class=1)
    return {"root": root, "clip": save_tiny_clip(str(root / "tiny.pt"))}


def set_option(trainer, key, value):
    trainer.cfg.defrost()
    trainer.cfg.DPC[key] = value
    trainer.cfg.freeze()
    trainer.dpc_plan_text()


def one_step(dpc, images, labels, pairs, text_modules, text_classes="all"):
    """(loss, logged values, gradients of the trained tensors, text rows encoded) of one stage-2 step on ``pairs``."""
    set_option(dpc, "TEXT_CLASSES", text_classes)
    rows = []
    handles = [m.register_forward_hook(lambda m, a, out: rows.append(out.shape[0])) for m in text_modules]
    dpc.dpc_batch = lambda images_, labels_: pairs
    try:
        loss, logged = dpc.dpc_loss(images, labels)
    finally:
        for h in handles:
            h.remove()
    trained = {n: p for n, p in dpc.dpc_net.named_parameters() if p.requires_grad}
    grads = torch.autograd.grad(loss, list(trained.values()), allow_unused=True)
    return loss.detach(), logged, dict(zip(trained, grads)), sum(rows)


def assert_same_step(step, reference, rel=1e-6):
    """Loss and gradient within ``rel`` of the reference: the gradient as one vector (every trained tensor, what the
    optimizer step reads), and each tensor within 10 ``rel`` of its own largest entry (fp32 rounding of another batch
    shape: CoCoOp's 2-entry Meta-Net bias, a sum with cancellation, differs by up to ~1.1e-6 of its size)."""
    loss, _, grads, _ = step
    assert torch.allclose(loss, reference[0], rtol=rel, atol=0)
    assert grads.keys() == reference[2].keys()
    scale = max(g.abs().max().item() for g in reference[2].values() if g is not None)
    for name, grad in grads.items():
        expected = reference[2][name]
        if expected is None:
            assert grad is None, name
            continue
        error = (grad - expected).abs().max().item()
        assert error <= rel * scale and error <= 10 * rel * expected.abs().max().item(), (name, error)


def stage2(workspace, tmp_path, name, *opts):
    """A DPC trainer of backbone ``name`` on a stage 1 saved untrained, before its first step (L <= 6 pairs)."""
    stage1, stage2_config = STAGES[name]
    depth = [x for key in DEPTHS.get(name, []) for x in (key, "2")]
    build(workspace, name, stage1, tmp_path / "stage1", *depth).save_model(0, str(tmp_path / "stage1"))
    dpc = build(workspace, f"DPC_{name}", stage2_config, tmp_path / "stage2", "DPC.STAGE1_DIR", str(tmp_path / "stage1"),
                "DPC.STAGE1_EPOCH", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "2", "DPC.TOPK", "3", *depth, *opts)
    dpc.before_train()
    dpc.set_model_mode("train")
    return dpc


@pytest.mark.parametrize("name", list(STAGES))
def test_the_pairs_classes_give_the_all_class_step(workspace, tmp_path, name):
    dpc = stage2(workspace, tmp_path, name)
    assert dpc.dm.num_classes == N_BASE
    batch = next(iter(dpc.train_loader_x))
    images, labels = batch["img"], batch["label"]
    pairs = dpc.dpc_batch(images, labels)
    n_pairs, n_classes = len(pairs[1]), len(set(pairs[1].tolist()))
    assert n_classes < N_BASE
    text = [m for m in dpc.dpc_net.modules() if isinstance(m, TextEncoder)]
    everything = one_step(dpc, images, labels, pairs, text, "all")
    per_image = name == "CoCoOp"  # each pair's class under its own image: the all-class step encodes L x C rows
    assert everything[3] == (n_pairs * N_BASE if per_image else N_BASE)
    all_class_terms = name in ("PromptSRC", "KgCoOp")  # PARALLEL_LOSS True in their DPC configs
    auto = one_step(dpc, images, labels, pairs, text, "auto")
    assert dpc.dpc_text_plan.pairs != all_class_terms
    if all_class_terms:  # their terms read every class: auto is the all-class step, bit for bit
        assert auto[3] == N_BASE and torch.equal(auto[0], everything[0]) and auto[1] == everything[1]
        assert all(torch.equal(g, everything[2][n]) for n, g in auto[2].items() if g is not None)
        set_option(dpc, "PARALLEL_LOSS", False)  # L_CL alone: auto encodes the pairs' classes, exactly
        everything = one_step(dpc, images, labels, pairs, text, "all")
        auto = one_step(dpc, images, labels, pairs, text, "auto")
        assert dpc.dpc_text_plan.pairs
    assert auto[3] == (n_pairs if per_image else n_classes) <= n_pairs
    assert_same_step(auto, everything)
    pairs_only = one_step(dpc, images, labels, pairs, text, "pairs")
    assert_same_step(pairs_only, everything)
    assert pairs_only[3] == auto[3]


@pytest.mark.parametrize("name", ["PromptSRC", "KgCoOp"])
def test_pairs_computes_the_all_class_terms_on_the_steps_classes(workspace, tmp_path, name):
    dpc = stage2(workspace, tmp_path, name)
    batch = next(iter(dpc.train_loader_x))
    images, labels = batch["img"], batch["label"]
    pairs = dpc.dpc_batch(images, labels)
    text = [m for m in dpc.dpc_net.modules() if isinstance(m, TextEncoder)]
    everything = one_step(dpc, images, labels, pairs, text, "all")
    estimate = one_step(dpc, images, labels, pairs, text, "pairs")
    assert dpc.dpc_text_plan.terms_on_pairs and estimate[3] <= len(pairs[1])
    assert estimate[1]["loss_cl"] == pytest.approx(everything[1]["loss_cl"], rel=1e-6)
    classes = torch.unique(pairs[1])
    with torch.no_grad():  # the term by hand on the step's classes, from the all-class text features under P'
        prompted = F.normalize(dpc.dpc_net.encode_text()[classes].float(), dim=-1)
    if name == "KgCoOp":
        frozen = dpc.dpc_net.frozen_text_features[classes].float()
        expected = dpc.trainer_cfg.W * (1 - F.cosine_similarity(prompted, frozen, dim=-1).mean())
        assert estimate[1]["kg"] == pytest.approx(expected.item(), rel=1e-5)
    else:
        frozen = dpc.dpc_net.zs_text_features[classes].float()
        expected = dpc.trainer_cfg.TEXT_LOSS_WEIGHT * (prompted - frozen).abs().mean()
        assert estimate[1]["scl_text"] == pytest.approx(expected.item(), rel=1e-5)
        assert estimate[1]["scl_image"] == pytest.approx(everything[1]["scl_image"], rel=1e-6)


def test_a_run_resumes_only_with_its_text_classes(workspace, tmp_path):
    from trainers.dpc.errors import ConfigError

    dpc = stage2(workspace, tmp_path, "CoOp")
    dpc.save_model(0, str(tmp_path / "stage2"))
    assert dpc.checkpoint_extras()["dpc"]["text_classes"] == "auto"
    again = build(workspace, "DPC_CoOp", STAGES["CoOp"][1], tmp_path / "stage2", "DPC.STAGE1_DIR",
                  str(tmp_path / "stage1"), "DPC.STAGE1_EPOCH", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "2",
                  "DPC.TOPK", "3", "DPC.TEXT_CLASSES", "pairs")
    with pytest.raises(ConfigError, match="text_classes 'auto' -> 'pairs'"):
        again.resume_model_if_exist(str(tmp_path / "stage2"))
