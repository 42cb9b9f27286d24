"""Weighting-Decoupling: the release's update (default) and the frozen-P variant, on a real tiny CoOp."""
import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tests import _prompt_checks as prompt_checks
from trainers.dpc import decoupling
from trainers.models.coop import CoOpCLIP

CLASSES = ["dog", "cat", "truck", "river", "forest"]
VARIANTS = list(itertools.product(decoupling.UPDATES, decoupling.BASE_PROMPTS))


def coop(clip_model, classes=CLASSES):
    torch.manual_seed(0)
    model = CoOpCLIP(classes, clip_model, n_ctx=4)
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith("prompt_learner."))
    return model


def wrap(model, w_b=0.2, w_n=1e-6, base_prompt="parallel", update="release"):
    names = decoupling.trainable_names(model.prompt_learner)
    decoupling.attach(model.prompt_learner, names, w_train=w_b, w_new=w_n, base_prompt=base_prompt, update=update)
    return model


def sgd_steps(model, images, labels, steps=3, lr=0.5):
    decoupling.set_mode(model, "train")
    prompt_checks.sgd_steps(model, images, labels, steps, lr)


@pytest.fixture
def batch():
    torch.manual_seed(1)
    return torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 0])


@pytest.mark.parametrize("update,base_prompt", VARIANTS)
@pytest.mark.parametrize("w_b", [0.2, 1.0, 0.37])
def test_dual_at_init_reproduces_stage1_logits_exactly_in_every_mode(tiny_clip, batch, w_b, update, base_prompt):
    images, _ = batch
    model = coop(tiny_clip)
    with torch.no_grad():
        stage1 = model(images)
    wrap(model, w_b=w_b, base_prompt=base_prompt, update=update)
    for mode in decoupling.MODES:
        decoupling.set_mode(model, mode)
        with torch.no_grad():
            assert torch.equal(model(images), stage1), mode


@pytest.mark.parametrize("update,base_prompt", VARIANTS)
def test_new_mode_with_zero_weight_keeps_stage1_after_training(tiny_clip, batch, update, base_prompt):
    images, labels = batch
    model = coop(tiny_clip)
    with torch.no_grad():
        stage1 = model(images)
    wrap(model, w_b=0.2, w_n=0.0, base_prompt=base_prompt, update=update)
    sgd_steps(model, images, labels)
    with torch.no_grad():
        decoupling.set_mode(model, "new")
        assert torch.equal(model(images), stage1)
        decoupling.set_mode(model, "stage1")
        assert torch.equal(model(images), stage1)
        decoupling.set_mode(model, "train")
        trained = model(images)
        decoupling.set_mode(model, "base")
        assert torch.equal(model(images), trained) == (base_prompt == "parallel")  # parallel base prompt = P'
    assert not torch.allclose(trained, stage1)


@pytest.mark.parametrize("update", decoupling.UPDATES)
def test_gradients_reach_only_the_trainable_duals(tiny_clip, batch, update):
    images, labels = batch
    model = wrap(coop(tiny_clip), update=update)
    decoupling.set_mode(model, "train")
    F.cross_entropy(model(images), labels).backward()
    with_grad = [n for n, p in model.named_parameters() if p.grad is not None]
    assert with_grad == ["prompt_learner.parametrizations.ctx.original"]
    assert all(not b.requires_grad for b in model.buffers())
    dual = next(decoupling.dual_prompts(model))
    assert dual.stage1.grad is None


# ---------------------------------------------------------------- one optimizer step, by hand
class OnePrompt(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.ctx = nn.Parameter(value.clone())


# P = (1, 2); loss = c . P' with c = (1, -2), so dL/dP' = c everywhere. SGD: lr 0.5, momentum 0.5,
# weight decay 0.25; w_b = 0.25 (1/w_b = 4); w_n = 0.5. Every number below is exact in fp32.
# The trainable M gets d = 4 c + 0.25 M in both variants (frozen: dP'/dM = 4; release: gradient x 4):
#   step 1: d = (4.25, -7.5),       buf = d,                   M = (1, 2) - 0.5 buf = (-1.125, 5.75)
#   step 2: d = (3.71875, -6.5625), buf = 0.5 buf + d = (5.84375, -10.3125), M = (-4.046875, 10.90625)
# release: P' = M.  frozen: P' = P + 4 (M - P) = (-19.1875, 37.625).
M_AFTER_TWO_STEPS = [-4.046875, 10.90625]
EXPECTED = {  # (update, base prompt): (P', base prompt, new prompt with w_n = 0.5)
    ("release", "parallel"): ([-4.046875, 10.90625], [-4.046875, 10.90625], [-1.5234375, 6.453125]),
    # mixed base: 0.25 P' + 0.75 P
    ("release", "mixed"): ([-4.046875, 10.90625], [-0.26171875, 4.2265625], [-1.5234375, 6.453125]),
    ("frozen", "parallel"): ([-19.1875, 37.625], [-19.1875, 37.625], [-9.09375, 19.8125]),
    # frozen mixed base: 0.25 P' + 0.75 P = M itself
    ("frozen", "mixed"): ([-19.1875, 37.625], M_AFTER_TWO_STEPS, [-9.09375, 19.8125]),
}


def two_sgd_steps(**options):
    """A dual prompt P = (1, 2) after two SGD steps (lr 0.5, momentum 0.5, weight decay 0.25) on loss c . ctx."""
    module = OnePrompt(torch.tensor([1.0, 2.0]))
    decoupling.attach(module, ["ctx"], w_train=0.25, w_new=0.5, **options)
    optim = torch.optim.SGD(module.parameters(), lr=0.5, momentum=0.5, weight_decay=0.25)
    c = torch.tensor([1.0, -2.0])
    for _ in range(2):
        optim.zero_grad()
        (c * module.ctx).sum().backward()
        optim.step()
    return module


@pytest.mark.parametrize("update,base_prompt", VARIANTS)
def test_sgd_with_momentum_and_weight_decay_matches_the_hand_computed_step(update, base_prompt):
    module = two_sgd_steps(update=update, base_prompt=base_prompt)
    parallel, base, new = (torch.tensor(v) for v in EXPECTED[update, base_prompt])
    assert torch.equal(module.parametrizations.ctx.original.detach(), torch.tensor(M_AFTER_TWO_STEPS))
    for mode, expected in (("train", parallel), ("base", base), ("new", new), ("stage1", torch.tensor([1.0, 2.0]))):
        decoupling.set_mode(module, mode)
        assert torch.equal(module.ctx.detach(), expected), mode


# The same two steps for a dual w_b does not act on (weighted=False): d = c + 0.25 M under every rule,
#   step 1: d = (1.25, -1.5),        buf = d,                      M = (0.375, 2.75)
#   step 2: d = (1.09375, -1.3125),  buf = (1.71875, -2.0625),     M = (-0.484375, 3.78125) = P' = base prompt;
# new classes with w_n = 0.5: (P' + P) / 2 = (0.2578125, 2.890625) when mixed, P = (1, 2) when not.
PLAIN_AFTER_TWO_STEPS = [-0.484375, 3.78125]


@pytest.mark.parametrize("update,base_prompt", VARIANTS)
@pytest.mark.parametrize("mixed_new", [True, False])
def test_a_dual_w_b_does_not_act_on_trains_as_a_plain_parameter(update, base_prompt, mixed_new):
    module = two_sgd_steps(update=update, base_prompt=base_prompt, weighted=[],
                           mixed_new=["ctx"] if mixed_new else [])
    plain = torch.tensor(PLAIN_AFTER_TWO_STEPS)
    new = torch.tensor([0.2578125, 2.890625]) if mixed_new else torch.tensor([1.0, 2.0])
    decoupling.set_weights(module, w_base=0.5)  # a w_b sweep leaves it alone too
    for mode, expected in (("train", plain), ("base", plain), ("new", new), ("stage1", torch.tensor([1.0, 2.0]))):
        decoupling.set_mode(module, mode)
        assert torch.equal(module.ctx.detach(), expected), mode
    state = module.state_dict()
    assert state["parametrizations.ctx.0._extra_state"].tolist() == [1.0, decoupling.UPDATES.index(update), 0.0]
    weighted = OnePrompt(torch.tensor([1.0, 2.0]))
    decoupling.attach(weighted, ["ctx"], w_train=0.25, update=update)
    weighted.load_state_dict(state)  # the checkpoint says how w_b acted on each tensor
    dual = next(decoupling.dual_prompts(weighted))
    assert (dual.weighted, dual.w_train) == (False, 1.0)
    state["parametrizations.ctx.0._extra_state"] = torch.tensor([0.25, 0.0], dtype=torch.float64)  # older form
    weighted.load_state_dict(state)
    assert (dual.weighted, dual.w_train, dual.update) == (True, 0.25, "release")


class ReleaseCoOpContext(nn.Module):
    """The authors' CoOp+DPC prompt (``converse`` mode) as their code executes it.

    They build ``ctx = nn.Parameter(pretuned_ctx)``, so the "frozen" stage-1 prompt shares storage
    with the trained tensor, and read the prompt as (ctx - (1 - w) * pretuned_ctx) * (1 / w).
    """

    def __init__(self, stage1, w):
        super().__init__()
        self.pretuned_ctx = stage1.clone()
        self.ctx = nn.Parameter(self.pretuned_ctx)  # shares storage, as in the release
        self.w = w

    def prompt(self):
        return (self.ctx - (1 - self.w) * self.pretuned_ctx) * (1 / self.w)

    def new_class_prompt(self, true_stage1, w_n):
        """Their load_model for new classes: P re-read from the stage-1 checkpoint."""
        return w_n * self.ctx.detach() + (1 - w_n) * true_stage1


def test_default_update_is_the_release_update_bit_for_bit():
    """Paper settings (lr 0.002, momentum 0.9, weight decay 5e-4, w_b 0.2): same trajectory, bit for bit."""
    torch.manual_seed(3)
    stage1 = torch.randn(4, 16) * 0.02
    coeff = torch.randn(4, 16)  # a linear loss: the gradient is the same wherever it is taken
    release = ReleaseCoOpContext(stage1, 0.2)
    ours = OnePrompt(stage1)
    decoupling.attach(ours, ["ctx"], w_train=0.2, w_new=1e-6)
    options = dict(lr=0.002, momentum=0.9, weight_decay=5e-4)
    optims = [torch.optim.SGD(release.parameters(), **options), torch.optim.SGD(ours.parameters(), **options)]
    for _ in range(5):
        for optim, prompt in zip(optims, (release.prompt, lambda: ours.ctx)):
            optim.zero_grad()
            (coeff * prompt()).sum().backward()
            optim.step()
    assert torch.equal(ours.ctx.detach(), release.ctx.detach())  # P' is the release's trained tensor
    assert not torch.equal(release.pretuned_ctx, stage1)  # their "frozen" P moved with it
    dual = ours.parametrizations.ctx[0]
    assert torch.equal(dual.stage1, stage1)  # ours keeps the true stage-1 P
    decoupling.set_mode(ours, "new")
    assert torch.allclose(ours.ctx, release.new_class_prompt(stage1, 1e-6), rtol=0, atol=1e-8)  # 1 ulp: P + w(P'-P)
    decoupling.set_mode(ours, "base")
    assert torch.equal(ours.ctx, release.ctx.detach())


def test_release_update_matches_the_release_on_a_real_coop_model(tiny_clip, batch):
    """The same with CoOp's text encoder and cross-entropy (equal up to the release's rounding of P')."""
    images, labels = batch
    model = wrap(coop(tiny_clip), w_b=0.2)
    reference = coop(tiny_clip)
    release = ReleaseCoOpContext(reference.prompt_learner.ctx.detach(), 0.2)
    decoupling.set_mode(model, "train")
    options = dict(lr=0.01, momentum=0.9, weight_decay=5e-4)
    ours_optim = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], **options)
    release_optim = torch.optim.SGD(release.parameters(), **options)
    for _ in range(3):
        ours_optim.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        ours_optim.step()
        release_optim.zero_grad()
        logits = torch.func.functional_call(reference, {"prompt_learner.ctx": release.prompt()}, (images,))
        F.cross_entropy(logits, labels).backward()
        release_optim.step()
    moved = (release.ctx - release.pretuned_ctx).abs().max()
    assert moved == 0  # in the release P and the trained tensor are one
    first_step = (model.prompt_learner.ctx.detach() - model.prompt_learner.parametrizations.ctx[0].stage1).abs().max()
    assert first_step > 1e-4
    # the release evaluates the loss at (theta - 0.8 theta) * 5, theta up to rounding (~1e-8 here), so the
    # trajectories agree to ~3e-6 of the distance travelled; the frozen-P rule would be off by a factor 5
    assert torch.allclose(model.prompt_learner.ctx.detach(), release.ctx.detach(), rtol=0, atol=1e-5 * first_step)


@pytest.mark.parametrize("update,power", [("release", 1), ("frozen", 2)])
def test_one_plain_sgd_step_moves_the_parallel_prompt_by_lr_over_w_to_the_power(tiny_clip, batch, update, power):
    """Plain SGD of lr: P' moves by lr / w_b times its gradient (release) or lr / w_b**2 (frozen P)."""
    images, labels = batch
    w = 0.2
    model = wrap(coop(tiny_clip), w_b=w, update=update)
    decoupling.set_mode(model, "train")
    learner = model.prompt_learner
    before = learner.ctx.detach().clone()
    plain = coop(tiny_clip)  # gradient with respect to P' itself
    plain.prompt_learner.ctx.data.copy_(before)
    F.cross_entropy(plain(images), labels).backward()
    grad_parallel = plain.prompt_learner.ctx.grad
    sgd_steps(model, images, labels, steps=1, lr=0.01)
    after = learner.ctx.detach()
    assert torch.allclose(after - before, -0.01 / w**power * grad_parallel, atol=1e-7, rtol=1e-4)


@pytest.mark.parametrize("update", decoupling.UPDATES)
def test_state_dict_round_trip_restores_both_prompts_and_the_rule(tiny_clip, batch, update):
    images, labels = batch
    model = wrap(coop(tiny_clip), update=update)
    sgd_steps(model, images, labels, steps=2)
    state = model.prompt_learner.state_dict()
    assert set(state) == {"parametrizations.ctx.original", "parametrizations.ctx.0.stage1",
                          "parametrizations.ctx.0._extra_state"}
    assert state["parametrizations.ctx.0._extra_state"].tolist() == [0.2, decoupling.UPDATES.index(update), 1.0]
    torch.manual_seed(5)
    fresh = CoOpCLIP(CLASSES, tiny_clip, n_ctx=4)  # different random context
    other = "frozen" if update == "release" else "release"
    wrap(fresh, w_b=0.9, update=other)  # even another w_b and rule: the checkpoint's win
    fresh.prompt_learner.load_state_dict(state)
    for mode in decoupling.MODES:
        decoupling.set_mode(model, mode)
        decoupling.set_mode(fresh, mode)
        with torch.no_grad():
            assert torch.equal(fresh(images), model(images)), mode


def test_checkpoints_without_a_rule_are_read_with_the_frozen_rule(tiny_clip):
    """Stage-2 checkpoints written before the release rule existed were trained with a frozen P."""
    model = wrap(coop(tiny_clip))
    state = model.prompt_learner.state_dict()
    state["parametrizations.ctx.0._extra_state"] = {"w_train": 0.2}
    model.prompt_learner.load_state_dict(state)
    assert next(decoupling.dual_prompts(model)).update == "frozen"
    state["parametrizations.ctx.0._extra_state"] = {"w_train": 0.5, "update": "release"}  # the dict form
    model.prompt_learner.load_state_dict(state)
    dual = next(decoupling.dual_prompts(model))
    assert (dual.w_train, dual.update) == (0.5, "release")


def test_whole_state_dict_arithmetic_works(tiny_clip):
    """Upstream PromptSRC averages ``model.state_dict()`` entry by entry (every value times a weight)."""
    model = wrap(coop(tiny_clip), w_b=0.2, update="frozen")
    state = model.prompt_learner.state_dict()
    averaged = {k: v * 0.25 + v * 0.75 for k, v in state.items()}
    model.prompt_learner.load_state_dict(averaged)
    dual = next(decoupling.dual_prompts(model))
    assert dual.update == "frozen" and abs(dual.w_train - 0.2) < 1e-12


def test_invalid_weights_modes_and_rules_are_rejected(tiny_clip):
    model = coop(tiny_clip)
    names = decoupling.trainable_names(model.prompt_learner)
    for w_b in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="W_BASE"):
            decoupling.attach(model.prompt_learner, names, w_train=w_b)
    for w_n in (-1e-3, 1.01):
        with pytest.raises(ValueError, match="W_NEW"):
            decoupling.attach(model.prompt_learner, names, w_train=0.2, w_new=w_n)
    with pytest.raises(ValueError, match="BASE_PROMPT"):
        decoupling.attach(model.prompt_learner, names, w_train=0.2, base_prompt="sum")
    with pytest.raises(ValueError, match="DPC.UPDATE must be one of \\('release', 'frozen'\\)"):
        decoupling.attach(model.prompt_learner, names, w_train=0.2, update="paper")
    with pytest.raises(ValueError, match="no dual prompts"):
        decoupling.set_mode(model, "train")
    wrap(model)
    with pytest.raises(ValueError, match="mode must be one of"):
        decoupling.set_mode(model, "eval")
    with pytest.raises(ValueError, match="already has a dual"):
        decoupling.attach(model.prompt_learner, ["ctx"], w_train=0.2)
    with pytest.raises(ValueError, match="no learnable prompt"):
        decoupling.attach(model.prompt_learner, [], w_train=0.2)


def test_mode_context_manager_restores_the_previous_mode(tiny_clip):
    model = wrap(coop(tiny_clip))
    decoupling.set_mode(model, "base")
    with decoupling.mode(model, "stage1"):
        assert decoupling.get_mode(model) == "stage1"
    assert decoupling.get_mode(model) == "base"


def test_tensor_rules_select_the_declared_duals_or_every_one():
    from trainers.dpc import tensor_rules

    prompts = {"prompt_learner": ["vision_ctx", "deep_vision.0", "projector.layers.0.weight", "dpc_text.ctx"]}
    declared = tensor_rules.select(prompts, ("dpc_text.ctx",), "auto", "DPC_X", "dpc_w_base_names", "W_BASE_TENSORS")
    assert declared == {"prompt_learner": ["dpc_text.ctx"]}
    assert tensor_rules.select(prompts, ("dpc_text.ctx",), "all", "DPC_X", "dpc_w_base_names",
                               "W_BASE_TENSORS") == prompts
    assert tensor_rules.select(prompts, None, "auto", "DPC_X", "dpc_w_base_names", "W_BASE_TENSORS") == prompts
    mixed = tensor_rules.select(prompts, ("vision_ctx", "deep_vision.*"), "auto", "DPC_X", "dpc_w_new_names",
                                "W_NEW_TENSORS")
    text = tensor_rules.report(prompts, declared, mixed, "DPC_X", ("W_BASE_TENSORS auto", "W_NEW_TENSORS auto"))
    assert "w_b acts on (gradient x 1/w_b): dpc_text.ctx (1 of 4 duals, DPC_X's rule" in text
    assert "give their stage-1 value on new classes: projector.layers.0.weight, dpc_text.ctx" in text
    with pytest.raises(ValueError, match=r"DPC_X.dpc_w_new_names has patterns that match no tensor.*\['vpt'\].*"
                                         r"set DPC.W_NEW_TENSORS all"):
        tensor_rules.select(prompts, ("vpt",), "auto", "DPC_X", "dpc_w_new_names", "W_NEW_TENSORS")
