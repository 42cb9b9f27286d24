"""CoCoOp model (tiny fp32 CLIP) against a hand computation of the paper's formula, and one Dassl run."""
import pytest
import torch
import torch.nn.functional as F

from clip.model import convert_weights

from tests import _clip_by_hand as by_hand
from tests._prompt_checks import (BASE, NEW, WIDTH, check_checkpoint_round_trip, check_dpc_invariants,
                                  check_only_prompts_learn, images, make_clip)
from trainers.models.cocoop import CoCoOpCLIP

EMBED = 32  # the tiny CLIP's embedding (image feature) size


def build(classnames=BASE, clip_model=None, **options):
    clip_model = clip_model or make_clip()
    options = {"n_ctx": 16, "ctx_init": "a photo of a", **options}
    return CoCoOpCLIP(classnames, clip_model, **options), clip_model


def perturbed(model):
    """Move every learnable tensor off its initialisation (a non-trivial Meta-Net bias)."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.prompt_learner.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model


def test_learner_layout_and_initialisation():
    model, clip_model = build()
    pl = model.prompt_learner
    # with CTX_INIT the phrase fixes the context length (N_CTX 16 is not used), as upstream
    assert pl.n_ctx == 4 and pl.ctx.shape == (4, WIDTH)
    tokens, sentences = by_hand.sentence_embeddings(clip_model, [f"a photo of a {c.replace('_', ' ')}." for c in BASE])
    assert torch.equal(pl.tokenized_prompts, tokens)
    with torch.no_grad():
        assert torch.equal(pl.text_prompts(), sentences)
    net = pl.meta_net
    assert [type(m).__name__ for m in net] == ["Linear", "ReLU", "Linear"]
    assert (net.linear1.in_features, net.linear1.out_features) == (EMBED, EMBED // 16)
    assert (net.linear2.in_features, net.linear2.out_features) == (EMBED // 16, WIDTH)
    random_init = build(ctx_init="", n_ctx=3)[0].prompt_learner
    assert random_init.ctx.shape == (3, WIDTH) and random_init.ctx.std() < 0.05
    with pytest.raises(ValueError, match="N_CTX"):
        build(ctx_init="", n_ctx=0)


def test_meta_net_follows_clips_precision():
    """Upstream halves the Meta-Net under PREC fp16 (CLIP in fp16); with fp32 CLIP everything is fp32."""
    clip_model = make_clip()
    convert_weights(clip_model)
    model, _ = build(clip_model=clip_model)
    assert {p.dtype for p in model.prompt_learner.parameters()} == {torch.float16}
    fp32, _ = build()
    assert {p.dtype for p in fp32.prompt_learner.parameters()} == {torch.float32}


def test_logits_match_the_paper_formula_by_hand():
    """pi_m(x) = ctx_m + h(x) with h the Meta-Net of the normalised image feature; every image i scores
    class c with exp(t) cos(f_i, g([pi(x_i), name_c])), the prompts run through CLIP's own transformer."""
    model, clip_model = build()
    perturbed(model)
    image = images(3)
    pl = model.prompt_learner
    tokens, sentences = by_hand.sentence_embeddings(clip_model, [f"a photo of a {c.replace('_', ' ')}." for c in BASE])
    with torch.no_grad():
        f = by_hand.unit(clip_model.encode_image(image))
        w1, b1 = pl.meta_net.linear1.weight, pl.meta_net.linear1.bias
        w2, b2 = pl.meta_net.linear2.weight, pl.meta_net.linear2.bias
        bias = torch.relu(f @ w1.t() + b1) @ w2.t() + b2  # [3, width]
        assert bias.abs().max() > 0.1  # the test is not vacuous
        expected = torch.empty(3, len(BASE))
        for i in range(3):
            prompts = sentences.clone()
            prompts[:, 1:5] = pl.ctx + bias[i]
            g = by_hand.unit(by_hand.text_features(clip_model, prompts, tokens))
            expected[i] = clip_model.logit_scale.exp() * g @ f[i]
        assert torch.allclose(model(image), expected, atol=1e-5)
        text = model.encode_text(model.encode_image(image))
        assert text.shape == (3, len(BASE), EMBED)


def test_zero_bias_gives_clip_on_the_init_sentence():
    """With the Meta-Net's output zeroed, every image's prompts are "a photo of a <class>.": CLIP's text features."""
    model, clip_model = build()
    with torch.no_grad():
        model.prompt_learner.meta_net.linear2.weight.zero_()
        model.prompt_learner.meta_net.linear2.bias.zero_()
        text = model.encode_text(model.encode_image(images(2)))
        clip_text = clip_model.encode_text(by_hand.sentence_embeddings(clip_model, [
            f"a photo of a {c.replace('_', ' ')}." for c in BASE])[0])
        assert torch.allclose(text, clip_text.expand(2, -1, -1), atol=1e-5)


def test_text_features_are_per_image_from_one_call_per_image():
    model, _ = build()
    perturbed(model)
    image = images(3)
    calls = {"image": 0, "text": 0}
    model.image_encoder.register_forward_hook(lambda *a: calls.__setitem__("image", calls["image"] + 1))
    model.text_encoder.register_forward_hook(lambda *a: calls.__setitem__("text", calls["text"] + 1))
    with torch.no_grad():
        logits = model(image)
    assert calls == {"image": 1, "text": 3} and logits.shape == (3, len(BASE))
    with torch.no_grad():
        features = model.encode_image(image)
        text = model.encode_text(features)
        assert not torch.allclose(text[0], text[1])  # image-conditioned
        # one image alone gets the same prompts as in the batch
        assert torch.allclose(model.encode_text(features[1:2])[0], text[1], atol=1e-6)
        assert torch.allclose(model.logits(features, text), logits)
    with pytest.raises(ValueError, match="image_features"):
        model.encode_text()


def test_only_context_and_meta_net_learn():
    model, clip_model = build()
    learner = check_only_prompts_learn(model, clip_model)
    assert learner == {"prompt_learner.ctx"} | {f"prompt_learner.meta_net.linear{i}.{k}"
                                                for i in (1, 2) for k in ("weight", "bias")}
    F.cross_entropy(model(images()), torch.tensor([0, 1, 2])).backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None and p.grad.abs().sum() > 0) == (n in learner), n


def test_dpc_invariants():
    check_dpc_invariants(build)


def test_checkpoint_round_trip_to_new_classes():
    check_checkpoint_round_trip(lambda names: build(names))


def test_an_upstream_checkpoint_layout_loads():
    """Upstream's prompt_learner checkpoints use the same names (ctx, meta_net.linear1/linear2) and also hold
    the class-dependent token buffers, which must be ignored for other classes."""
    from trainers.dpc.checkpoint import load_state_checked

    base, _ = build()
    perturbed(base)
    upstream = dict(base.prompt_learner.state_dict(), token_prefix=base.prompt_learner.token_prefix,
                    token_suffix=base.prompt_learner.token_suffix)
    new, _ = build(NEW)
    load_state_checked(new.prompt_learner, upstream, "upstream.pth")
    for name, value in base.prompt_learner.state_dict().items():
        assert torch.equal(new.prompt_learner.state_dict()[name], value), name
    assert new.prompt_learner.token_suffix.shape[0] == len(NEW)


def test_base_to_new_with_dassl(tmp_path):
    pytest.importorskip("dassl")
    from tests._backbone_e2e import base_to_new, check_base_to_new_run, make_workspace

    workspace = make_workspace(tmp_path)
    config = "configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml"
    base, new, ckpt, accuracy = base_to_new(workspace, "CoCoOp", config, tmp_path / "out")
    check_base_to_new_run(base, new, ckpt, accuracy)
    assert base.cfg.DATALOADER.TRAIN_X.BATCH_SIZE == 1 and base.cfg.OPTIM.LR == 0.002
    assert set(ckpt["state_dict"]) == {"ctx", "meta_net.linear1.weight", "meta_net.linear1.bias",
                                       "meta_net.linear2.weight", "meta_net.linear2.bias"}
    assert base.num_batches == 3 * 2  # batch 1: one step per image (3 base classes x 2 shots)
