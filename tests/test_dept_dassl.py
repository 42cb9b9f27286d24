"""DePT as a plug-in, with real Dassl, a tiny real CLIP and a synthetic EuroSAT: its head, loss and fused
prediction against a hand re-statement of DePT's code (github Koorye/DePT, trainers/elp_coop.py), checkpoints,
evaluation on new classes, and the one-command script."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("dassl")

from tests import _clip_by_hand as by_hand  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tools.synthetic_data import make_dataset  # noqa: E402
from tools.tiny_clip import save_tiny_clip  # noqa: E402
from trainers.clip_loader import load_clip  # noqa: E402

SHOTS = 4
TINY = ["MODEL.BACKBONE.NAME", "custom", "INPUT.SIZE", "(32,32)", "DATALOADER.NUM_WORKERS", "0",
        "DATALOADER.TEST.BATCH_SIZE", "16", "OPTIM.MAX_EPOCH", "2", "TRAIN.PRINT_FREQ", "2"]
COOP_CFG = "configs/trainers/DePT/CoOp/vit_b16_ep10_bs4_lr35.yaml"
LAMBDA = 0.7


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    root = tmp_path_factory.mktemp("dept")
    make_dataset(str(root / "data"), "eurosat", n_classes=10, train_per_class=6)
    clip_file = save_tiny_clip(str(root / "tiny.pt"))
    return {"root": root, "data": str(root / "data"), "clip": clip_file}


def build(space, trainer, config, out, *opts):
    """A Dassl trainer built in this process from train.py's command line (tiny settings, then ``opts``)."""
    import train

    args = train.parse_args([
        "--root", space["data"], "--seed", "1", "--trainer", trainer,
        "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
        "--config-file", os.path.join(ROOT, config), "--output-dir", str(out),
        "DATASET.NUM_SHOTS", str(SHOTS), "MODEL.BACKBONE.PATH", space["clip"], *TINY, *opts])
    return train.build(train.setup_cfg(args))


def perturb(module, seed):
    """Move every parameter off its initial value (the channel transforms start as the identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))


def coop_text_by_hand(clip_model, ctx, classnames):
    """CoOp's text features written out: "X .. X <class>." with the context vectors in place of the X tokens."""
    n = ctx.shape[0]
    tokens, emb = by_hand.sentence_embeddings(clip_model, [" ".join(["X"] * n) + f" {c.replace('_', ' ')}."
                                                           for c in classnames])
    emb = torch.cat([emb[:, :1], ctx.unsqueeze(0).expand(len(classnames), -1, -1), emb[:, 1 + n:]], dim=1)
    return by_hand.text_features(clip_model, emb, tokens)


def head_by_hand(params, features, which):
    """DePT's code: FiLM ``scale * x + bias`` on unnormalised features, then the linear classifier."""
    return (features * params[f"{which}_transform.scale"] + params[f"{which}_transform.shift"]) @ \
        params["classifier.weight"].t() + params["classifier.bias"]


@pytest.fixture(scope="module")
def coop(space):
    """A DePT_CoOp trainer on the base classes with a moved context and head, and one training batch."""
    trainer = build(space, "DePT_CoOp", COOP_CFG, space["root"] / "coop", "DATASET.SUBSAMPLE_CLASSES", "base")
    perturb(trainer.model.prompt_learner, 0)
    perturb(trainer.dept_head, 1)
    batch = next(iter(trainer.train_loader_x))
    yield trainer, batch
    trainer.close_writer()


def test_loss_and_gradients_are_depts(space, coop):
    """Loss (1 - l) CE(prompt) + l CE(head over [class text; image] rows), and its gradients on the context and every
    head parameter, equal a hand re-statement of DePT's code on the same tiny CLIP weights and images."""
    trainer, batch = coop
    images, labels = batch["img"], batch["label"]
    trainer.set_model_mode("train")
    trainer.model_zero_grad()
    loss, logged = trainer.dept_loss(images, labels)
    loss.backward()
    ours = {"ctx": trainer.model.prompt_learner.ctx.grad.clone(),
            **{n: p.grad.clone() for n, p in trainer.dept_head.named_parameters()}}

    clip_model = load_clip("custom", space["clip"], prec="fp32")
    params = {n: p.detach().clone().requires_grad_() for n, p in trainer.dept_head.named_parameters()}
    ctx = trainer.model.prompt_learner.ctx.detach().clone().requires_grad_()
    text = coop_text_by_hand(clip_model, ctx, trainer.dm.dataset.classnames)
    with torch.no_grad():
        image = clip_model.encode_image(images)
    prompt_logits = clip_model.logit_scale.exp() * by_hand.unit(image) @ by_hand.unit(text).t()
    rows = torch.cat([head_by_hand(params, text[labels], "text"), head_by_hand(params, image, "image")])
    ce, ce_head = F.cross_entropy(prompt_logits, labels), F.cross_entropy(rows, torch.cat([labels, labels]))
    expected = (1 - LAMBDA) * ce + LAMBDA * ce_head
    expected.backward()

    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert logged["ce"] == pytest.approx(ce.item(), rel=1e-5) and logged["ce_head"] == pytest.approx(ce_head.item(), rel=1e-5)
    assert torch.allclose(ours["ctx"], ctx.grad, rtol=1e-4, atol=1e-5)  # float sums in another order
    for name, param in params.items():
        assert torch.allclose(ours[name], param.grad, rtol=1e-4, atol=1e-5), name
    trainer.model_zero_grad()


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")  # the schedule moved by hand
def test_the_head_learns_at_6_5_times_the_prompts_rate_as_in_depts_one_optimizer(coop):
    """Two Dassl models, each with its SGD and schedule, step exactly as DePT's one SGD with two parameter groups."""
    trainer, batch = coop
    prompt, head = trainer._optims["prompt_learner"], trainer._optims["dept_head"]
    assert prompt.param_groups[0]["initial_lr"] == 0.0035
    assert head.param_groups[0]["initial_lr"] == pytest.approx(0.0035 * 6.5)
    assert {id(p) for p in head.param_groups[0]["params"]} == {id(p) for p in trainer.dept_head.parameters()}
    trainer.update_lr()  # past the constant warm-up epoch (both at 1e-5 there): each on its own cosine
    assert head.param_groups[0]["lr"] == pytest.approx(6.5 * prompt.param_groups[0]["lr"])
    assert prompt.param_groups[0]["lr"] > 1e-3

    params = [trainer.model.prompt_learner.ctx, *trainer.dept_head.parameters()]
    clones = [p.detach().clone().requires_grad_() for p in params]
    o = trainer.cfg.OPTIM
    reference = torch.optim.SGD([{"params": clones[:1], "lr": prompt.param_groups[0]["lr"]},
                                 {"params": clones[1:], "lr": head.param_groups[0]["lr"]}], lr=o.LR,
                                momentum=o.MOMENTUM, weight_decay=o.WEIGHT_DECAY, dampening=o.SGD_DAMPNING)
    trainer.set_model_mode("train")
    for _ in range(2):  # the second step uses the momentum of the first
        trainer.model_zero_grad()
        trainer.dept_loss(batch["img"], batch["label"])[0].backward()
        for clone, param in zip(clones, params):
            clone.grad = param.grad.clone()
        trainer.model_update()
        reference.step()
    for clone, param in zip(clones, params):
        assert torch.equal(clone, param)
    trainer.model_zero_grad()


@pytest.mark.parametrize("fusion", ["logits", "probabilities", "head"])
def test_base_classes_are_predicted_by_the_fused_classifiers(space, coop, fusion):
    """DePT's code fuses logits, its paper probabilities; "head" is its TEST_TIME_FUSION False."""
    trainer, batch = coop
    images = batch["img"]
    trainer.set_model_mode("eval")
    trainer.cfg.defrost()
    trainer.cfg.DEPT.FUSION = fusion
    try:
        with torch.no_grad():
            ours = trainer.model_inference(images)
    finally:
        trainer.cfg.DEPT.FUSION = "logits"
        trainer.cfg.freeze()
    clip_model = load_clip("custom", space["clip"], prec="fp32")
    params = dict(trainer.dept_head.named_parameters())
    with torch.no_grad():
        text = coop_text_by_hand(clip_model, trainer.model.prompt_learner.ctx, trainer.dm.dataset.classnames)
        image = clip_model.encode_image(images)
        prompt = clip_model.logit_scale.exp() * by_hand.unit(image) @ by_hand.unit(text).t()
        head = head_by_hand(params, image, "image")
    expected = {"logits": (1 - LAMBDA) * prompt + LAMBDA * head,
                "probabilities": (1 - LAMBDA) * prompt.softmax(-1) + LAMBDA * head.softmax(-1), "head": head}[fusion]
    assert torch.allclose(ours, expected, rtol=1e-4, atol=1e-5)


def test_a_saved_run_evaluates_base_classes_fused_and_new_classes_by_the_prompts_alone(space, coop):
    trainer, batch = coop
    out = space["root"] / "coop_saved"
    trainer.save_model(0, str(out))
    images = batch["img"]
    trainer.set_model_mode("eval")
    with torch.no_grad():
        in_memory = trainer.model_inference(images)
    ckpt = torch.load(out / "dept_head" / "model.pth.tar-1", map_location="cpu", weights_only=False)
    assert ckpt["dept"]["head_classes"] == list(trainer.dm.dataset.classnames) and ckpt["dept"]["weight"] == LAMBDA
    assert set(ckpt["state_dict"]) == {"image_transform.scale", "image_transform.shift", "text_transform.scale",
                                       "text_transform.shift", "classifier.weight", "classifier.bias"}

    base = build(space, "DePT_CoOp", COOP_CFG, space["root"] / "coop_eval_base", "DATASET.SUBSAMPLE_CLASSES", "base")
    base.load_model(str(out), epoch=1)
    base.set_model_mode("eval")
    with torch.no_grad():
        assert torch.equal(base.model_inference(images), in_memory)

    new = build(space, "DePT_CoOp", COOP_CFG, space["root"] / "coop_eval_new", "DATASET.SUBSAMPLE_CLASSES", "new")
    new.load_model(str(out), epoch=1)
    new.set_model_mode("eval")
    assert not new.dept_fused
    clip_model = load_clip("custom", space["clip"], prec="fp32")
    with torch.no_grad():
        text = coop_text_by_hand(clip_model, trainer.model.prompt_learner.ctx, new.dm.dataset.classnames)
        expected = clip_model.logit_scale.exp() * by_hand.unit(clip_model.encode_image(images)) @ by_hand.unit(text).t()
        assert torch.allclose(new.model_inference(images), expected, rtol=1e-4, atol=1e-5)

    with pytest.raises(ValueError, match="DePT_CoOp"):  # the backbone alone would drop the head silently
        plain = build(space, "CoOp", "configs/trainers/CoOp/vit_b16_c4_ep20_batch32_lr35.yaml",
                      space["root"] / "coop_plain", "DATASET.SUBSAMPLE_CLASSES", "base", "TRAINER.COOP.N_CTX", "16",
                      "TRAINER.COOP.CTX_INIT", "")
        plain.load_model(str(out), epoch=1)
    for t in (base, new):
        t.close_writer()


def test_the_head_keeps_the_rows_of_the_evaluated_classes(space, coop):
    """Evaluated classes that are a subset of the trained ones (ImageNet-A/R in DePT's code) get their own rows."""
    trainer, _ = coop
    out = space["root"] / "coop_saved_rows"
    trainer.save_model(0, str(out))
    ckpt_path = out / "dept_head" / "model.pth.tar-1"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    names = list(trainer.dm.dataset.classnames)
    order = [3, 0, 4, 1, 2]
    ckpt["dept"]["head_classes"] = [names[i] for i in order]  # the same head, trained with its classes reordered
    ckpt["state_dict"]["classifier.weight"] = ckpt["state_dict"]["classifier.weight"][order]
    ckpt["state_dict"]["classifier.bias"] = ckpt["state_dict"]["classifier.bias"][order]
    torch.save(ckpt, ckpt_path)
    again = build(space, "DePT_CoOp", COOP_CFG, space["root"] / "coop_eval_rows", "DATASET.SUBSAMPLE_CLASSES", "base")
    again.load_model(str(out), epoch=1)
    assert again.dept_fused
    assert torch.equal(again.dept_head.classifier.weight, trainer.dept_head.classifier.weight.detach())
    again.close_writer()


@pytest.mark.parametrize("trainer_name,config,opts", [
    ("DePT_MaPLe", "configs/trainers/DePT/MaPLe/vit_b16_c2_ep10_batch4_2ctx.yaml", ["TRAINER.MAPLE.PROMPT_DEPTH", "3"]),
    ("DePT_CoCoOp", "configs/trainers/DePT/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml", ["DATALOADER.TRAIN_X.BATCH_SIZE", "3"]),
    ("DePT_PromptSRC", "configs/trainers/DePT/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
     ["TRAINER.PROMPTSRC.GPA_MEAN", "2", "TRAINER.PROMPTSRC.GPA_STD", "1"]),
])
def test_other_backbones_train_their_prompts_through_both_classifiers(space, trainer_name, config, opts):
    """On the backbone's own prompted features (per image for CoCoOp) the loss is DePT's plus the backbone's own
    terms at their weights (PromptSRC's L_SCL); the head's gradient reaches the prompts of both towers."""
    trainer = build(space, trainer_name, config, space["root"] / trainer_name, "DATASET.SUBSAMPLE_CLASSES", "base", *opts)
    perturb(trainer.dept_head, 2)
    batch = next(iter(trainer.train_loader_x))
    images, labels = batch["img"], batch["label"]
    trainer.set_model_mode("train")
    loss, logged = trainer.dept_loss(images, labels)
    net, head = trainer.model, dict(trainer.dept_head.named_parameters())
    with torch.no_grad():
        image = net.encode_image(images)
        text = net.encode_text(image) if trainer_name == "DePT_CoCoOp" else net.encode_text()
        prompt = net.logits(image, text)
        chosen = text[torch.arange(len(labels)), labels] if text.dim() == 3 else text[labels]
        rows = torch.cat([head_by_hand(head, chosen, "text"), head_by_hand(head, image, "image")])
        expected = (1 - LAMBDA) * F.cross_entropy(prompt, labels) + LAMBDA * F.cross_entropy(rows, torch.cat([labels, labels]))
        terms = trainer.regularization_terms(images, image, text) if hasattr(trainer, "regularization_terms") else {}
    assert set(logged) == {"acc", "ce", "ce_head", *terms}
    assert loss.item() == pytest.approx(expected.item() + sum(t.item() for t in terms.values()), rel=1e-5)
    trainer.model_zero_grad()
    F.cross_entropy(*trainer.dept_head.training_logits(*trainer.dept_features(images), labels)).backward()
    reached = {n.split(".")[0] for n, p in net.prompt_learner.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert reached >= ({"ctx", "proj"} if trainer_name == "DePT_MaPLe" else
                       {"ctx", "meta_net"} if trainer_name == "DePT_CoCoOp" else {"ctx", "vision_ctx"})
    trainer.close_writer()


def test_one_command_trains_tests_base_and_new_and_reuses_finished_runs(space):
    env = dict(os.environ, DATA_ROOT=space["data"], OUTPUT_ROOT=str(space["root"] / "output"), SHOTS=str(SHOTS),
               PYTHON=sys.executable)
    cmd = ["bash", "scripts/dept/base2new_train.sh", "eurosat", "1", "maple", "MODEL.BACKBONE.PATH", space["clip"],
           *TINY, "OPTIM.MAX_EPOCH", "1"]
    first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    runs = space["root"] / "output" / "base2new"
    train = runs / "train_base" / "eurosat" / f"shots_{SHOTS}" / "DePT_MaPLe" / "vit_b16_c2_ep10_batch4_2ctx" / "seed1"
    test = runs / "test_new" / "eurosat" / f"shots_{SHOTS}" / "DePT_MaPLe" / "vit_b16_c2_ep10_batch4_2ctx" / "seed1"
    for run in (train, test):
        assert json.loads((run / "done.json").read_text())["accuracy"] is not None
    assert (train / "dept_head" / "model.pth.tar-1").is_file() and (train / "prompt_learner" / "model.pth.tar-1").is_file()
    fingerprint = json.loads((train / "fingerprint.json").read_text())
    assert fingerprint["DEPT.WEIGHT"] == LAMBDA and not any(k.startswith("DPC.") for k in fingerprint)
    assert fingerprint["TRAINER.MAPLE.PROMPT_DEPTH"] == 4  # fitted to the tiny CLIP's 4 layers
    assert "prompts alone predict them" in (test / "log.txt").read_text()
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("(skipped)") == 2, again.stdout[-3000:]
    bad = subprocess.run(["bash", "scripts/dept/base2new_train.sh", "eurosat", "1", "promptkd"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown backbone 'promptkd' (choose coop, cocoop, kgcoop, maple or promptsrc)" in bad.stderr
