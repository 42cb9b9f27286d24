"""MaPLe model (tiny fp32 CLIP, no Dassl) and the shared deep-prompt helper."""
import pytest
import torch

import clip
from clip.model import CLIP

from tests._prompt_checks import (BASE, VISION_WIDTH, WIDTH, changed_blocks, check_checkpoint_round_trip,
                            check_dpc_invariants, check_only_prompts_learn, images, record_blocks, make_clip)
from trainers.encoders import replace_text_prompt, replace_vision_prompt, run_blocks
from trainers.models.maple import MaPLeCLIP

DEPTH = 3  # 2 deep prompts, before blocks 1 and 2 of 4


def build(classnames=BASE, depth=DEPTH, clip_model=None):
    clip_model = clip_model or make_clip()
    return MaPLeCLIP(classnames, clip_model, n_ctx=2, ctx_init="a photo of a", prompt_depth=depth), clip_model


# ---------------------------------------------------------------- shared helper
@pytest.mark.parametrize("tower", ["text", "vision"])
def test_run_blocks_replaces_prompts_up_to_depth_only(tower):
    clip_model = make_clip()
    if tower == "text":
        blocks, width, length, replace = clip_model.transformer.resblocks, WIDTH, 77, replace_text_prompt
        at = slice(1, 3)
    else:
        blocks, width, length, replace = clip_model.visual.transformer.resblocks, VISION_WIDTH, 7, replace_vision_prompt
        at = slice(length - 2, length)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(length, 2, width, generator=g)
    deep = [torch.randn(2, width, generator=g) for _ in range(DEPTH - 1)]

    with torch.no_grad(), record_blocks(blocks) as (inputs, outputs):
        run_blocks(blocks, x, deep, replace)
    for j in range(1, len(blocks)):
        if j <= len(deep):  # block j sees deep prompt j - 1 in place of the previous prompt outputs
            assert torch.equal(inputs[j][at], deep[j - 1].unsqueeze(1).expand(-1, 2, -1))
            rest = [i for i in range(length) if i not in range(*at.indices(length))]
            assert torch.equal(inputs[j][rest], outputs[j - 1][rest])
        else:  # beyond the depth the prompt tokens flow on
            assert torch.equal(inputs[j], outputs[j - 1])

    for i in range(len(deep)):
        changed = [d.clone() for d in deep]
        changed[i] += 1.0
        with torch.no_grad(), record_blocks(blocks) as (_, perturbed):
            run_blocks(blocks, x, changed, replace)
        for j in range(len(blocks)):
            assert torch.equal(outputs[j], perturbed[j]) == (j <= i), (i, j)

    with pytest.raises(ValueError, match="prompt depth"):
        run_blocks(blocks, x, deep + [deep[0]] * 2, replace)


# ---------------------------------------------------------------- model
def test_prompt_layout_matches_upstream():
    """2 learned tokens "a photo"; "of a <class>." stays fixed text; initial prompt = the plain sentence."""
    model, clip_model = build()
    pl = model.prompt_learner
    tokens = torch.cat([clip.tokenize(f"a photo of a {c.replace('_', ' ')}.") for c in BASE])
    assert torch.equal(pl.tokenized_prompts, tokens)
    with torch.no_grad():
        assert torch.equal(pl.text_prompts(), clip_model.token_embedding(tokens))
        assert torch.equal(pl.ctx, clip_model.token_embedding(clip.tokenize("a photo"))[0, 1:3])


def test_coupling_maps_text_prompts_to_vision_width():
    model, _ = build()
    pl = model.prompt_learner
    assert pl.ctx.shape == (2, WIDTH) and len(pl.deep_text) == DEPTH - 1
    assert (pl.proj.in_features, pl.proj.out_features) == (WIDTH, VISION_WIDTH)
    assert pl.vision_prompt().shape == (2, VISION_WIDTH)
    deep = pl.deep_vision_prompts()
    assert len(deep) == DEPTH - 1
    for i, d in enumerate(deep):
        assert d.shape == (2, VISION_WIDTH)
        assert torch.equal(d, pl.deep_proj[i](pl.deep_text[i]))
    # upstream clones one layer for all deep couplings
    assert torch.equal(pl.deep_proj[0].weight, pl.deep_proj[1].weight)
    assert pl.deep_proj[0].weight.data_ptr() != pl.deep_proj[1].weight.data_ptr()
    # the coupled prompts are what the vision blocks see
    with torch.no_grad(), record_blocks(model.image_encoder.visual.transformer.resblocks) as (inputs, _):
        model.encode_image(images(2))
        for i, d in enumerate(pl.deep_vision_prompts()):
            assert torch.equal(inputs[i + 1][-2:], d.unsqueeze(1).expand(-1, 2, -1))


@pytest.mark.parametrize("i", range(DEPTH - 1))
def test_deep_prompt_changes_both_towers_from_its_block_on(i):
    model, clip_model = build()
    text, vision = changed_blocks(model, clip_model, images(2), model.prompt_learner.deep_text[i])
    assert text == vision == list(range(i + 1, 4))
    model, clip_model = build()
    text, vision = changed_blocks(model, clip_model, images(2), model.prompt_learner.deep_proj[i].weight)
    assert text == [] and vision == list(range(i + 1, 4))


def test_shallow_prompts_change_every_block():
    model, clip_model = build()
    assert changed_blocks(model, clip_model, images(2), model.prompt_learner.ctx) == ([0, 1, 2, 3], [0, 1, 2, 3])
    model, clip_model = build()
    assert changed_blocks(model, clip_model, images(2), model.prompt_learner.proj.bias) == ([], [0, 1, 2, 3])


def test_encoders_stay_frozen():
    model, clip_model = build()
    learner = check_only_prompts_learn(model, clip_model)
    torch.nn.functional.cross_entropy(model(images()), torch.tensor([0, 1, 2])).backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == (n in learner), n
    assert all(p.grad is None for p in clip_model.parameters())


def test_depth_one_is_shallow_and_validation():
    model, _ = build(depth=1)
    assert len(model.prompt_learner.deep_text) == 0 and len(model.prompt_learner.deep_proj) == 0
    assert model(images(2)).shape == (2, len(BASE))
    build(depth=4)  # prompts in every block
    for depth in (0, 5):
        with pytest.raises(ValueError, match="PROMPT_DEPTH"):
            build(depth=depth)
    with pytest.raises(ValueError, match="CTX_INIT"):
        MaPLeCLIP(BASE, make_clip(), n_ctx=3, ctx_init="a photo", prompt_depth=2)


def test_resnet_backbone_is_refused():
    rn = CLIP(embed_dim=32, image_resolution=32, vision_layers=(1, 1, 1, 1), vision_width=16, vision_patch_size=None,
              context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=2)
    with pytest.raises(ValueError, match="ViT"):
        MaPLeCLIP(BASE, rn, n_ctx=2, prompt_depth=1)


# ---------------------------------------------------------------- DPC and checkpoints
def test_dpc_invariants():
    check_dpc_invariants(build)


def test_checkpoint_round_trip_to_new_classes():
    check_checkpoint_round_trip(lambda names: build(names))
