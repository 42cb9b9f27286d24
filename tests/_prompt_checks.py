"""Checks shared by the MaPLe and PromptSRC tests (tiny fp32 CLIP, no Dassl)."""
from __future__ import annotations

import contextlib
import io
import itertools

import torch
import torch.nn.functional as F

from tools.tiny_clip import build_tiny_clip
from trainers.dpc import decoupling

LAYERS, WIDTH, VISION_WIDTH, IMAGE = 4, 64, 128, 32
BASE = ["cat", "golden_retriever", "sports car"]
NEW = ["tulip", "fire truck", "owl", "bagel"]


def make_clip():
    return build_tiny_clip(layers=LAYERS, width=WIDTH, embed_dim=32, image_size=IMAGE, patch_size=16,
                           vision_width=VISION_WIDTH)


def images(n=3, seed=1):
    return torch.randn(n, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(seed))


def freeze_like_trainer(model):
    """The PromptTrainer rule: only parameters under ``prompt_learner.`` train."""
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("prompt_learner."))
    return model


def check_only_prompts_learn(model, clip_model):
    """After the trainer's freezing rule, only ``prompt_learner`` tensors are trainable; the rest is CLIP's own."""
    freeze_like_trainer(model)
    learner = {f"prompt_learner.{n}" for n, _ in model.prompt_learner.named_parameters()}
    assert learner == {n for n, p in model.named_parameters() if p.requires_grad}
    # everything else is CLIP's own (shared, not copied) weights
    assert {id(p) for n, p in model.named_parameters() if not n.startswith("prompt_learner.")} <= {
        id(p) for p in clip_model.parameters()}
    return learner


@contextlib.contextmanager
def record_blocks(blocks):
    """Collect (inputs, outputs) of every block of ``blocks`` during the enclosed forward."""
    inputs, outputs = [], []
    handles = [b.register_forward_pre_hook(lambda m, a: inputs.append(a[0].detach().clone())) for b in blocks]
    handles += [b.register_forward_hook(lambda m, a, o: outputs.append(o.detach().clone())) for b in blocks]
    try:
        yield inputs, outputs
    finally:
        for h in handles:
            h.remove()


def block_outputs(model, clip_model, image):
    """Outputs of every text block and every vision block for one forward of ``model``."""
    with torch.no_grad(), record_blocks(clip_model.transformer.resblocks) as (_, text), \
            record_blocks(clip_model.visual.transformer.resblocks) as (_, vision):
        model(image)
    return text, vision


def changed_blocks(model, clip_model, image, tensor):
    """Indices of the text and vision blocks whose output changes when ``tensor`` is perturbed."""
    text0, vision0 = block_outputs(model, clip_model, image)
    with torch.no_grad():
        tensor.add_(torch.randn(tensor.shape, generator=torch.Generator().manual_seed(7)).to(tensor.dtype))
    text1, vision1 = block_outputs(model, clip_model, image)
    changed = lambda a, b: [i for i, (x, y) in enumerate(zip(a, b)) if not torch.equal(x, y)]  # noqa: E731
    return changed(text0, text1), changed(vision0, vision1)


def sgd_steps(model, image, labels, steps=3, lr=0.5):
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.SGD(params, lr=lr)
    for _ in range(steps):
        optim.zero_grad()
        F.cross_entropy(model(image), labels).backward()
        optim.step()


def check_dpc_invariants(build, frozen_buffers=()):
    """The DPC weighting-decoupling invariants on a freshly built model.

    ``build()`` returns (model, clip_model); ``frozen_buffers`` names buffers of the model that
    must stay untouched.
    """
    image, labels = images(), torch.tensor([0, 1, 2])
    for update, w_b in itertools.product(decoupling.UPDATES, (0.2, 1.0)):
        model, clip_model = build()
        freeze_like_trainer(model)
        with torch.no_grad():
            expected = model(image)
        clip_before = {k: v.clone() for k, v in clip_model.state_dict().items()}
        buffers_before = {k: getattr(model, k).clone() for k in frozen_buffers}
        names = decoupling.trainable_names(model.prompt_learner)
        stage1 = {n: p.detach().clone() for n, p in model.prompt_learner.named_parameters() if n in names}
        decoupling.attach(model.prompt_learner, names, w_train=w_b, w_new=1e-6, update=update)
        for mode in decoupling.MODES:
            decoupling.set_mode(model, mode)
            with torch.no_grad():
                assert torch.equal(model(image), expected), (update, w_b, mode)

        # gradients reach the duals' M only
        decoupling.set_mode(model, "train")
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        assert trainable and all(n.startswith("prompt_learner.") and n.endswith(".original") for n in trainable)
        F.cross_entropy(model(image), labels).backward()
        for n, p in model.named_parameters():
            assert (p.grad is not None) == (n in trainable), n
        model.zero_grad(set_to_none=True)

        sgd_steps(model, image, labels)
        decoupling.set_weights(model, w_new=0.0)
        with torch.no_grad():
            decoupling.set_mode(model, "new")
            assert torch.equal(model(image), expected)
            decoupling.set_mode(model, "stage1")
            assert torch.equal(model(image), expected)
            decoupling.set_mode(model, "train")
            assert not torch.allclose(model(image), expected)
        # frozen stage-1 copies, CLIP and frozen buffers are untouched
        duals = {n: m for n, m in model.prompt_learner.named_modules() if isinstance(m, decoupling.DualPrompt)}
        assert len(duals) == len(names)
        for name in names:
            owner, attr = name.rsplit(".", 1) if "." in name else ("", name)
            key = f"{owner}.parametrizations.{attr}.0" if owner else f"parametrizations.{attr}.0"
            assert torch.equal(duals[key].stage1, stage1[name]), name
        for k, v in clip_model.state_dict().items():
            assert torch.equal(v, clip_before[k]), k
        for k, v in buffers_before.items():
            assert torch.equal(getattr(model, k), v), k


def check_checkpoint_round_trip(build_for):
    """Prompt learner state of a base-class model loads into a model built for other classes."""
    from trainers.dpc.checkpoint import load_state_checked

    base, _ = build_for(BASE)
    with torch.no_grad():
        for p in base.prompt_learner.parameters():
            p.add_(0.01 * torch.randn_like(p))
    buffer = io.BytesIO()
    torch.save(base.prompt_learner.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert all(not k.startswith(("token_", "tokenized")) for k in state)  # class-dependent buffers are rebuilt

    new, _ = build_for(NEW)
    load_state_checked(new.prompt_learner, state, "memory")
    for (n, a), (m, b) in zip(base.prompt_learner.named_parameters(), new.prompt_learner.named_parameters()):
        assert n == m and torch.equal(a, b), n
    with torch.no_grad():
        assert new(images()).shape == (3, len(NEW))

    # the same for a DPC-wrapped learner (M plus the frozen stage-1 copy P)
    decoupling.attach(base.prompt_learner, decoupling.trainable_names(base.prompt_learner), w_train=0.2)
    fresh, _ = build_for(NEW)
    decoupling.attach(fresh.prompt_learner, decoupling.trainable_names(fresh.prompt_learner), w_train=0.2)
    load_state_checked(fresh.prompt_learner, base.prompt_learner.state_dict(), "memory")
    for mode in ("stage1", "new"):
        decoupling.set_mode(base, mode)
        decoupling.set_mode(fresh, mode)
        with torch.no_grad():
            # the class-independent part (the image side) agrees exactly
            assert torch.equal(base.encode_image(images()), fresh.encode_image(images()))
