"""Weighting-Decoupling on a real (tiny) CoOp model: exactness, gradients, reparameterisation."""
import pytest
import torch
import torch.nn.functional as F

from tests import _prompt_checks as prompt_checks
from trainers.dpc import decoupling
from trainers.models.coop import CoOpCLIP

CLASSES = ["dog", "cat", "truck", "river", "forest"]


def coop(clip_model, classes=CLASSES):
    torch.manual_seed(0)
    model = CoOpCLIP(classes, clip_model, n_ctx=4)
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith("prompt_learner."))
    return model


def wrap(model, w_b=0.2, w_n=1e-6, base_prompt="parallel"):
    names = decoupling.trainable_names(model.prompt_learner)
    decoupling.attach(model.prompt_learner, names, w_train=w_b, w_new=w_n, base_prompt=base_prompt)
    return model


def sgd_steps(model, images, labels, steps=3, lr=0.5):
    decoupling.set_mode(model, "train")
    prompt_checks.sgd_steps(model, images, labels, steps, lr)


@pytest.fixture
def batch():
    torch.manual_seed(1)
    return torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 0])


@pytest.mark.parametrize("w_b", [0.2, 1.0, 0.37])
@pytest.mark.parametrize("base_prompt", ["parallel", "mixed"])
def test_dual_at_init_reproduces_stage1_logits_exactly_in_every_mode(tiny_clip, batch, w_b, base_prompt):
    images, _ = batch
    model = coop(tiny_clip)
    with torch.no_grad():
        stage1 = model(images)
    wrap(model, w_b=w_b, base_prompt=base_prompt)
    for mode in decoupling.MODES:
        decoupling.set_mode(model, mode)
        with torch.no_grad():
            assert torch.equal(model(images), stage1), mode


def test_new_mode_with_zero_weight_keeps_stage1_after_training(tiny_clip, batch):
    images, labels = batch
    model = coop(tiny_clip)
    with torch.no_grad():
        stage1 = model(images)
    wrap(model, w_b=0.2, w_n=0.0)
    sgd_steps(model, images, labels)
    with torch.no_grad():
        decoupling.set_mode(model, "new")
        assert torch.equal(model(images), stage1)
        decoupling.set_mode(model, "stage1")
        assert torch.equal(model(images), stage1)
        decoupling.set_mode(model, "train")
        trained = model(images)
        decoupling.set_mode(model, "base")
        assert torch.equal(model(images), trained)  # parallel base prompt = P'
    assert not torch.allclose(trained, stage1)


def test_gradients_reach_only_the_trainable_duals(tiny_clip, batch):
    images, labels = batch
    model = wrap(coop(tiny_clip))
    decoupling.set_mode(model, "train")
    F.cross_entropy(model(images), labels).backward()
    with_grad = [n for n, p in model.named_parameters() if p.grad is not None]
    assert with_grad == ["prompt_learner.parametrizations.ctx.original"]
    assert all(not b.requires_grad for b in model.buffers())
    dual = next(decoupling.dual_prompts(model))
    assert dual.stage1.grad is None


def test_modes_follow_the_published_formulas(tiny_clip, batch):
    images, labels = batch
    model = wrap(coop(tiny_clip), w_b=0.2, w_n=0.3, base_prompt="mixed")
    sgd_steps(model, images, labels, steps=2)
    learner = model.prompt_learner
    m = learner.parametrizations.ctx.original.detach()
    p = learner.parametrizations.ctx[0].stage1
    parallel = (m - 0.8 * p) / 0.2
    expected = {"stage1": p, "train": parallel, "base": 0.2 * parallel + 0.8 * p,
                "new": 0.3 * parallel + 0.7 * p}
    for mode, value in expected.items():
        decoupling.set_mode(model, mode)
        assert torch.allclose(learner.ctx, value, atol=1e-6), mode
    decoupling.set_mode(model, "base")
    assert torch.allclose(learner.ctx, m, atol=1e-6)  # paper-literal base prompt is M itself
    decoupling.set_weights(model, w_base=0.5, w_new=0.0)  # changed at evaluation, no retraining
    assert torch.allclose(learner.ctx, 0.5 * parallel + 0.5 * p, atol=1e-6)
    decoupling.set_mode(model, "new")
    assert torch.equal(learner.ctx, p)


def test_sgd_on_the_dual_moves_the_parallel_prompt_by_one_over_w_squared(tiny_clip, batch):
    """The documented side effect: one SGD step of lr on M is a step of lr / w_b**2 on P'."""
    images, labels = batch
    w = 0.2
    model = wrap(coop(tiny_clip), w_b=w)
    decoupling.set_mode(model, "train")
    learner = model.prompt_learner
    before = learner.ctx.detach().clone()
    # gradient with respect to P' itself
    prompt = before.clone().requires_grad_(True)
    plain = coop(tiny_clip)
    plain.prompt_learner.ctx.data.copy_(prompt.detach())
    F.cross_entropy(plain(images), labels).backward()
    grad_parallel = plain.prompt_learner.ctx.grad
    sgd_steps(model, images, labels, steps=1, lr=0.01)
    after = learner.ctx.detach()
    assert torch.allclose(after - before, -0.01 / w**2 * grad_parallel, atol=1e-6, rtol=1e-4)


def test_state_dict_round_trip_restores_both_prompts(tiny_clip, batch):
    images, labels = batch
    model = wrap(coop(tiny_clip))
    sgd_steps(model, images, labels, steps=2)
    state = model.prompt_learner.state_dict()
    assert set(state) == {"parametrizations.ctx.original", "parametrizations.ctx.0.stage1",
                          "parametrizations.ctx.0._extra_state"}
    torch.manual_seed(5)
    fresh = CoOpCLIP(CLASSES, tiny_clip, n_ctx=4)  # different random context
    wrap(fresh, w_b=0.9)  # even another w_b: the checkpoint's w_train wins
    fresh.prompt_learner.load_state_dict(state)
    for mode in decoupling.MODES:
        decoupling.set_mode(model, mode)
        decoupling.set_mode(fresh, mode)
        with torch.no_grad():
            assert torch.equal(fresh(images), model(images)), mode


def test_invalid_weights_and_modes_are_rejected(tiny_clip):
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
