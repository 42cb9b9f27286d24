"""PromptSRC model, its self-regulating terms and GPA (tiny fp32 CLIP, no Dassl)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import clip

from tests._prompt_checks import (BASE, VISION_WIDTH, WIDTH, changed_blocks, check_checkpoint_round_trip,
                                  check_dpc_invariants, check_only_prompts_learn, freeze_like_trainer, images, make_clip)
from trainers.dpc import decoupling
from trainers.gpa import PromptAggregate
from trainers.options import gaussian_epoch_weights
from trainers.models.promptsrc import PromptSRCCLIP, self_regulating_losses
from trainers.templates import IMAGENET_TEMPLATES

DEPTH = 3
TEMPLATES = ("a photo of a {}.", "a sketch of the {}.", "the {} in a video game.")


def build(classnames=BASE, clip_model=None, templates=TEMPLATES, **options):
    clip_model = clip_model or make_clip()
    settings = dict(n_ctx_text=4, n_ctx_vision=4, ctx_init="a photo of a", depth_text=DEPTH, depth_vision=DEPTH)
    settings.update(options)
    return PromptSRCCLIP(classnames, clip_model, templates=templates, **settings), clip_model


# ---------------------------------------------------------------- prompts
def test_prompt_shapes_and_layout():
    model, clip_model = build()
    pl = model.prompt_learner
    assert pl.ctx.shape == (4, WIDTH) and pl.vision_ctx.shape == (4, VISION_WIDTH)
    assert [p.shape for p in pl.deep_text] == [(4, WIDTH)] * (DEPTH - 1)
    assert [p.shape for p in pl.deep_vision] == [(4, VISION_WIDTH)] * (DEPTH - 1)
    tokens = torch.cat([clip.tokenize(f"a photo of a {c.replace('_', ' ')}.") for c in BASE])
    with torch.no_grad():
        assert torch.equal(pl.text_prompts(), clip_model.token_embedding(tokens))


@pytest.mark.parametrize("i", range(DEPTH - 1))
def test_deep_prompts_change_their_tower_from_their_block_on(i):
    model, clip_model = build()
    assert changed_blocks(model, clip_model, images(2), model.prompt_learner.deep_text[i]) == (
        list(range(i + 1, 4)), [])
    model, clip_model = build()
    assert changed_blocks(model, clip_model, images(2), model.prompt_learner.deep_vision[i]) == (
        [], list(range(i + 1, 4)))


def test_shallow_prompts_change_every_block_of_their_tower():
    model, clip_model = build()
    assert changed_blocks(model, clip_model, images(2), model.prompt_learner.ctx) == ([0, 1, 2, 3], [])
    model, clip_model = build()
    assert changed_blocks(model, clip_model, images(2), model.prompt_learner.vision_ctx) == ([], [0, 1, 2, 3])


def test_vision_depth_zero_leaves_the_image_tower_unprompted():
    model, clip_model = build(depth_vision=0)
    assert model.prompt_learner.vision_ctx is None and len(model.prompt_learner.deep_vision) == 0
    with torch.no_grad():
        assert torch.allclose(model.encode_image(images(2)), clip_model.encode_image(images(2)), atol=1e-6)


def test_validation():
    for options in ({"depth_text": 0}, {"depth_text": 5}, {"depth_vision": 5}, {"depth_vision": -1}):
        with pytest.raises(ValueError, match="PROMPT_DEPTH"):
            build(**options)
    with pytest.raises(ValueError, match="CTX_INIT"):
        build(n_ctx_text=5)
    rn = clip.model.CLIP(embed_dim=32, image_resolution=32, vision_layers=(1, 1, 1, 1), vision_width=16,
                         vision_patch_size=None, context_length=77, vocab_size=49408, transformer_width=64,
                         transformer_heads=1, transformer_layers=2)
    with pytest.raises(ValueError, match="ViT"):
        build(clip_model=rn)


def test_encoders_stay_frozen_and_frozen_features_are_not_saved():
    model, clip_model = build()
    learner = check_only_prompts_learn(model, clip_model)
    assert set(model.prompt_learner.state_dict()) == {n[len("prompt_learner."):] for n in learner}
    assert "zs_text_features" not in model.state_dict()
    out = model.scl_outputs(images())
    loss = F.cross_entropy(out.logits, torch.tensor([0, 1, 2])) + sum(self_regulating_losses(out, 25, 10).values())
    loss.backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == (n in learner), n


# ---------------------------------------------------------------- self-regulating terms
def test_zero_shot_text_features_average_the_template_ensemble():
    model, clip_model = build(templates=IMAGENET_TEMPLATES)
    assert len(IMAGENET_TEMPLATES) == 60
    with torch.no_grad():
        per_template = [clip_model.encode_text(clip.tokenize([t.replace("{}", c.replace("_", " ")) for c in BASE]))
                        for t in IMAGENET_TEMPLATES]
    expected = F.normalize(torch.stack(per_template).mean(0), dim=-1)
    assert torch.allclose(model.zs_text_features, expected, atol=1e-6)


def test_loss_terms_match_hand_computation():
    model, clip_model = build()
    image = images()
    out = model.scl_outputs(image)
    terms = self_regulating_losses(out, text_weight=25.0, image_weight=10.0)
    with torch.no_grad():
        text = F.normalize(model.encode_text(), dim=-1)
        img = F.normalize(model.encode_image(image), dim=-1)
        zs_img = F.normalize(clip_model.encode_image(image), dim=-1)
        zs_txt = F.normalize(torch.stack([clip_model.encode_text(clip.tokenize(
            [t.replace("{}", c.replace("_", " ")) for c in BASE])) for t in TEMPLATES]).mean(0), dim=-1)
        scale = clip_model.logit_scale.exp()
        logits, zs_logits = scale * img @ text.t(), scale * zs_img @ zs_txt.t()
        p_zs = zs_logits.softmax(dim=1)
        kl = (p_zs * (p_zs.log() - logits.log_softmax(dim=1))).sum() / logits.numel()
        assert torch.equal(out.logits, model(image))
        assert torch.allclose(out.logits, logits, atol=1e-5)
        assert torch.allclose(terms["scl_text"], 25.0 * (text - zs_txt).abs().mean(), atol=1e-6)
        assert torch.allclose(terms["scl_image"], 10.0 * (img - zs_img).abs().mean(), atol=1e-6)
        assert torch.allclose(terms["scl_logits"], kl, atol=1e-7)
    assert terms["scl_logits"] > 0 and terms["scl_text"] > 0 and terms["scl_image"] > 0
    assert not out.zs_logits.requires_grad and not out.zs_image_features.requires_grad


# ---------------------------------------------------------------- GPA
def test_gaussian_weights():
    w = gaussian_epoch_weights(20, 15, 1)
    assert len(w) == 20 and abs(sum(w) - 1.0) < 1e-12
    assert max(range(20), key=w.__getitem__) == 14  # epoch 15
    assert all(abs(w[14 - k] - w[14 + k]) < 1e-15 for k in range(1, 6))
    assert all(a < b for a, b in zip(w[:14], w[1:15])) and all(a > b for a, b in zip(w[14:], w[15:]))
    for bad in ((0, 15, 1), (20, 15, 0), (20, 1e4, 1)):
        with pytest.raises(ValueError):
            gaussian_epoch_weights(*bad)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(2, 3))
        self.b = nn.ParameterList([nn.Parameter(torch.zeros(4))])
        self.frozen = nn.Parameter(torch.ones(3), requires_grad=False)
        self.register_buffer("buf", torch.full((2,), 5.0))


def test_gpa_aggregate_equals_hand_weighted_sum_and_survives_resume():
    weights = gaussian_epoch_weights(4, 2.5, 1)
    values = [torch.randn(2, 3, generator=torch.Generator().manual_seed(e)) for e in range(4)]

    def run(resume_after=None):
        module = Tiny()
        gpa = PromptAggregate(weights)
        for epoch in range(4):
            with torch.no_grad():
                module.a.copy_(values[epoch])
                module.b[0].fill_(float(epoch))
            gpa.update({"m": module}, epoch)
            if epoch == resume_after:  # as if killed here and resumed from the checkpoint
                state = gpa.state_dict()
                gpa = PromptAggregate(weights)
                gpa.load_state_dict(state)
        gpa.load_into({"m": module})
        return module

    module = run()
    assert torch.allclose(module.a, sum(w * v for w, v in zip(weights, values)), atol=1e-6)
    assert torch.allclose(module.b[0], torch.full((4,), sum(w * e for e, w in enumerate(weights))), atol=1e-6)
    assert torch.equal(module.frozen, torch.ones(3)) and torch.equal(module.buf, torch.full((2,), 5.0))
    resumed = run(resume_after=1)
    assert torch.equal(resumed.a, module.a) and torch.equal(resumed.b[0], module.b[0])

    gpa = PromptAggregate(weights)
    gpa.update({"m": Tiny()}, 0)
    with pytest.raises(ValueError, match="already"):
        gpa.update({"m": Tiny()}, 0)
    with pytest.raises(ValueError, match="weights differ"):
        PromptAggregate(gaussian_epoch_weights(5, 2.5, 1)).load_state_dict(gpa.state_dict())


def test_gpa_on_dpc_duals_averages_the_parallel_prompt():
    model, _ = build()
    freeze_like_trainer(model)
    pl = model.prompt_learner
    names = decoupling.trainable_names(pl)
    decoupling.attach(pl, names, w_train=0.2)
    decoupling.set_mode(model, "train")
    stage1 = {k: v.clone() for k, v in pl.state_dict().items() if k.endswith(".stage1")}
    weights = gaussian_epoch_weights(3, 2, 1)
    gpa = PromptAggregate(weights)
    parallel = []
    for epoch in range(3):
        with torch.no_grad():
            for p in pl.parameters():
                p.add_(0.1 * torch.randn_like(p))
        parallel.append(pl.ctx.detach().clone())  # P' in train mode
        gpa.update({"prompt_learner": pl}, epoch)
    assert all(n.endswith(".original") for n in gpa.sums["prompt_learner"])
    gpa.load_into({"prompt_learner": pl})
    assert torch.allclose(pl.ctx, sum(w * p for w, p in zip(weights, parallel)), atol=1e-5)
    for k, v in stage1.items():
        assert torch.equal(pl.state_dict()[k], v)


# ---------------------------------------------------------------- DPC and checkpoints
def test_dpc_invariants():
    check_dpc_invariants(build, frozen_buffers=("zs_text_features",))


def test_checkpoint_round_trip_to_new_classes():
    check_checkpoint_round_trip(lambda names: build(names))


# ---------------------------------------------------------------- GPA through the Dassl trainer hooks
def _stub_trainer(output_dir, max_epoch=4):
    """A PromptSRC trainer without data or CLIP file: just what after_epoch and resume use."""
    from types import SimpleNamespace

    from dassl.config import get_cfg_default

    from trainers.config import extend_cfg
    from trainers.promptsrc import PromptSRC

    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.OPTIM.MAX_EPOCH, cfg.TRAIN.CHECKPOINT_FREQ = max_epoch, 1
    cfg.TRAINER.PROMPTSRC.GPA_MEAN = 2
    trainer = PromptSRC.__new__(PromptSRC)  # skips Dassl's data and model building
    trainer._models, trainer._optims, trainer._scheds = {}, {}, {}
    trainer.cfg, trainer.output_dir, trainer.max_epoch = cfg, str(output_dir), max_epoch
    trainer.dm = SimpleNamespace(dataset=SimpleNamespace(classnames=BASE))
    model, _ = build()
    freeze_like_trainer(model)
    trainer.model = model
    optim = torch.optim.SGD(model.prompt_learner.parameters(), lr=0.1)
    trainer.register_model("prompt_learner", model.prompt_learner, optim, None)
    c = cfg.TRAINER.PROMPTSRC
    trainer.gpa = PromptAggregate(gaussian_epoch_weights(max_epoch, c.GPA_MEAN, c.GPA_STD))  # as build_model
    return trainer


def _epochs(trainer, epochs):
    for epoch in epochs:  # deterministic "training": parameters depend on the epoch only
        with torch.no_grad():
            for i, p in enumerate(trainer.model.prompt_learner.parameters()):
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(100 * epoch + i)))
        trainer.epoch = epoch
        trainer.after_epoch()


def test_gpa_final_model_and_resume_through_trainer_hooks(tmp_path):
    pytest.importorskip("dassl")
    from trainers.dpc.checkpoint import load_checkpoint

    full = _stub_trainer(tmp_path / "full")
    _epochs(full, range(4))
    final = {k: v.clone() for k, v in full.model.prompt_learner.state_dict().items()}
    saved = load_checkpoint(str(tmp_path / "full" / "prompt_learner" / "model.pth.tar-4"))
    for k, v in saved["state_dict"].items():  # the saved last-epoch model is the aggregate
        assert torch.equal(v, final[k]) and torch.equal(saved["gpa"]["sums"]["prompt_learner"][k], v), k
    assert saved["gpa"]["epochs"] == [0, 1, 2, 3]

    killed = _stub_trainer(tmp_path / "resumed")
    _epochs(killed, range(2))  # killed after epoch 2
    resumed = _stub_trainer(tmp_path / "resumed")
    assert resumed.resume_model_if_exist(str(tmp_path / "resumed")) == 2
    assert resumed.gpa.epochs == [0, 1]
    _epochs(resumed, range(2, 4))
    for k, v in resumed.model.prompt_learner.state_dict().items():
        assert torch.equal(v, final[k]), k
