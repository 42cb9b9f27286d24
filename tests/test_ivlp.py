"""IVLP model (tiny fp32 CLIP) against CLIP's blocks run by hand with the prompts overwritten, and one Dassl run."""
import pytest
import torch
import torch.nn.functional as F

from tests import _clip_by_hand as by_hand
from tests._prompt_checks import (BASE, LAYERS, VISION_WIDTH, WIDTH, changed_blocks, check_checkpoint_round_trip,
                                  check_dpc_invariants, check_only_prompts_learn, images, make_clip, record_blocks)
from trainers.models.ivlp import IVLPCLIP, IVLPPromptLearner
from trainers.models.promptsrc import PromptSRCCLIP

DEPTH = 3  # prompts at the input and deep prompts before blocks 1 and 2 of 4


def build(classnames=BASE, clip_model=None, **options):
    clip_model = clip_model or make_clip()
    settings = dict(n_ctx_text=2, n_ctx_vision=2, ctx_init="a photo of a", depth_text=DEPTH, depth_vision=DEPTH)
    settings.update(options)
    return IVLPCLIP(classnames, clip_model, **settings), clip_model


def sentences(classnames=BASE):
    return [f"a photo of a {c.replace('_', ' ')}." for c in classnames]


def test_prompt_layout_and_initialisation():
    """As upstream: "a photo" learned, "of a <class>." fixed; vision and deep prompts N(0, 0.02) in fp32."""
    model, clip_model = build(n_ctx_vision=64, depth_text=LAYERS, depth_vision=LAYERS)
    pl = model.prompt_learner
    tokens, embedding = by_hand.sentence_embeddings(clip_model, sentences())
    with torch.no_grad():
        assert torch.equal(pl.tokenized_prompts, tokens) and torch.equal(pl.text_prompts(), embedding)
        assert torch.equal(pl.ctx, embedding[0, 1:3])
    assert [p.shape for p in pl.deep_text] == [(2, WIDTH)] * (LAYERS - 1)
    assert pl.vision_ctx.shape == (64, VISION_WIDTH)
    assert [p.shape for p in pl.deep_vision] == [(64, VISION_WIDTH)] * (LAYERS - 1)
    for p in [pl.vision_ctx, *pl.deep_vision]:
        assert p.dtype == torch.float32 and abs(p.std().item() - 0.02) < 0.003 and abs(p.mean().item()) < 0.003


def test_logits_match_clip_blocks_run_by_hand():
    """Text: [SOS, ctx, rest] with deep_text[j-1] over tokens 1..n before block j < depth; vision: prompt
    tokens appended after the positional embedding, deep_vision[j-1] over the last n before block j."""
    model, clip_model = build()
    pl = model.prompt_learner
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in pl.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
    image = images(3)
    with torch.no_grad():
        tokens, embedding = by_hand.sentence_embeddings(clip_model, sentences())
        embedding[:, 1:3] = pl.ctx
        text = by_hand.unit(by_hand.text_features(clip_model, embedding, tokens, deep=list(pl.deep_text)))
        img = by_hand.unit(by_hand.image_features(clip_model, image, pl.vision_ctx, deep=list(pl.deep_vision)))
        expected = clip_model.logit_scale.exp() * img @ text.t()
        assert torch.allclose(model(image), expected, atol=1e-5)
        # the deep prompts really enter: without them the result differs
        shallow = by_hand.unit(by_hand.image_features(clip_model, image, pl.vision_ctx))
        assert not torch.allclose(shallow, img, atol=1e-3)


def test_block_inputs_hold_the_deep_prompts_up_to_the_depth_only():
    model, _ = build()
    pl = model.prompt_learner
    with torch.no_grad(), record_blocks(model.text_encoder.transformer.resblocks) as (text_in, text_out), \
            record_blocks(model.image_encoder.visual.transformer.resblocks) as (vis_in, vis_out):
        model(images(2))
    for j in range(1, LAYERS):
        if j < DEPTH:
            assert torch.equal(text_in[j][1:3], pl.deep_text[j - 1].unsqueeze(1).expand(-1, len(BASE), -1))
            assert torch.equal(vis_in[j][-2:], pl.deep_vision[j - 1].unsqueeze(1).expand(-1, 2, -1))
        else:  # beyond the depth the prompt tokens' outputs flow on
            assert torch.equal(text_in[j], text_out[j - 1]) and torch.equal(vis_in[j], vis_out[j - 1])


@pytest.mark.parametrize("i", range(DEPTH - 1))
def test_prompts_are_independent_per_tower(i):
    """No coupling: a text prompt changes only text blocks, a vision prompt only vision blocks."""
    model, clip_model = build()
    assert changed_blocks(model, clip_model, images(2), model.prompt_learner.deep_text[i]) == (
        list(range(i + 1, LAYERS)), [])
    model, clip_model = build()
    assert changed_blocks(model, clip_model, images(2), model.prompt_learner.deep_vision[i]) == (
        [], list(range(i + 1, LAYERS)))
    if i == 0:
        model, clip_model = build()
        assert changed_blocks(model, clip_model, images(2), model.prompt_learner.ctx) == (list(range(LAYERS)), [])
        model, clip_model = build()
        assert changed_blocks(model, clip_model, images(2), model.prompt_learner.vision_ctx) == (
            [], list(range(LAYERS)))


def test_vision_depth_zero_validation_and_frozen_clip():
    model, clip_model = build(depth_vision=0)
    with torch.no_grad():
        assert torch.allclose(model.encode_image(images(2)), clip_model.encode_image(images(2)), atol=1e-6)
    for options in ({"depth_text": 0}, {"depth_text": LAYERS + 1}, {"depth_vision": LAYERS + 1}):
        with pytest.raises(ValueError, match="IVLP.PROMPT_DEPTH"):
            build(**options)
    with pytest.raises(ValueError, match="CTX_INIT"):
        build(n_ctx_text=5)
    model, clip_model = build()
    learner = check_only_prompts_learn(model, clip_model)
    F.cross_entropy(model(images()), torch.tensor([0, 1, 2])).backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == (n in learner), n


def test_promptsrc_shares_the_learner():
    """PromptSRC learns IVLP's prompts: same learner, same tensors, same forward for the same prompts."""
    ivlp, clip_model = build(n_ctx_text=4, n_ctx_vision=4)
    psrc = PromptSRCCLIP(BASE, clip_model, templates=("a photo of a {}.",), n_ctx_text=4, n_ctx_vision=4,
                         depth_text=DEPTH, depth_vision=DEPTH)
    assert isinstance(psrc.prompt_learner, IVLPPromptLearner)
    psrc.prompt_learner.load_state_dict(ivlp.prompt_learner.state_dict())
    with torch.no_grad():
        assert torch.equal(psrc(images()), ivlp(images()))


def test_dpc_invariants():
    check_dpc_invariants(build)


def test_checkpoint_round_trip_to_new_classes():
    check_checkpoint_round_trip(lambda names: build(names))


def test_base_to_new_with_dassl(tmp_path):
    pytest.importorskip("dassl")
    from tests._backbone_e2e import base_to_new, check_base_to_new_run, make_workspace

    workspace = make_workspace(tmp_path)
    depth = ["TRAINER.IVLP.PROMPT_DEPTH_TEXT", str(DEPTH), "TRAINER.IVLP.PROMPT_DEPTH_VISION", str(DEPTH)]
    config = "configs/trainers/IVLP/vit_b16_c2_ep5_batch4_2+2ctx.yaml"
    base, new, ckpt, accuracy = base_to_new(workspace, "IVLP", config, tmp_path / "out", *depth)
    check_base_to_new_run(base, new, ckpt, accuracy)
    c = base.cfg
    assert (c.DATALOADER.TRAIN_X.BATCH_SIZE, c.OPTIM.LR, c.TRAINER.IVLP.N_CTX_TEXT, c.TRAINER.IVLP.N_CTX_VISION) == (
        4, 0.0035, 2, 2)
    assert set(ckpt["state_dict"]) == {"ctx", "vision_ctx", "deep_text.0", "deep_text.1", "deep_vision.0",
                                       "deep_vision.1"}
