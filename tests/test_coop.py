import pytest
import torch
import torch.nn.functional as F

from trainers.models.coop import CoOpCLIP

CLASSES = ["dog", "cat", "big truck", "sea_lake"]


def build(clip_model, classes=CLASSES, **options):
    torch.manual_seed(0)
    model = CoOpCLIP(classes, clip_model, **options)
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith("prompt_learner."))
    return model


@pytest.mark.parametrize("position", ["end", "middle", "front"])
@pytest.mark.parametrize("csc", [False, True])
def test_forward_backward_reaches_only_the_context(tiny_clip, position, csc):
    model = build(tiny_clip, n_ctx=4, csc=csc, class_token_position=position)
    logits = model(torch.randn(3, 3, 32, 32))
    assert logits.shape == (3, len(CLASSES))
    F.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert list(grads) == ["prompt_learner.ctx"]
    assert grads["prompt_learner.ctx"].abs().sum() > 0
    assert model.prompt_learner.ctx.shape == ((len(CLASSES), 4, 64) if csc else (4, 64))


def test_prompt_token_layout(tiny_clip):
    """The learned context sits where CLASS_TOKEN_POSITION says; the class tokens keep their embedding."""
    model = build(tiny_clip, n_ctx=2, class_token_position="front")
    prompts = model.prompt_learner()
    ctx = model.prompt_learner.ctx
    name_len = model.prompt_learner.name_lens[2]  # "big truck"
    assert name_len == 2
    assert torch.equal(prompts[2, 1 + name_len:1 + name_len + 2], ctx)
    end = build(tiny_clip, n_ctx=2, class_token_position="end").prompt_learner
    assert torch.equal(end()[2, 1:3], end.ctx)
    # the class-name tokens are identical in both layouts
    assert torch.equal(prompts[2, 1:1 + name_len], end()[2, 3:3 + name_len])


def test_ctx_init_uses_the_word_embeddings(tiny_clip):
    model = build(tiny_clip, n_ctx=16, ctx_init="a photo of a")
    learner = model.prompt_learner
    assert learner.n_ctx == 4 and learner.ctx.shape == (4, 64)
    tokens = learner.tokenized_prompts[0, 1:5]
    assert torch.equal(learner.ctx, tiny_clip.token_embedding(tokens))


def test_checkpoint_holds_only_the_context_and_moves_to_new_classes(tiny_clip):
    base = build(tiny_clip, n_ctx=4)
    state = base.prompt_learner.state_dict()
    assert list(state) == ["ctx"]  # no class-dependent buffers
    new = build(tiny_clip, classes=["horse", "river", "pasture land"], n_ctx=4)
    new.prompt_learner.load_state_dict(state)
    assert torch.equal(new.prompt_learner.ctx, base.prompt_learner.ctx)
    image = torch.randn(2, 3, 32, 32)
    assert new(image).shape == (2, 3)
    # the same context evaluated on a class shared by both lists gives the same text feature
    shared = build(tiny_clip, classes=["cat", "horse"], n_ctx=4)
    shared.prompt_learner.load_state_dict(state)
    assert torch.allclose(shared.encode_text()[0], base.encode_text()[1], atol=1e-5)


def test_class_specific_context_cannot_serve_other_classes(tiny_clip):
    base = build(tiny_clip, n_ctx=4, csc=True)
    new = build(tiny_clip, classes=["horse", "river"], n_ctx=4, csc=True)
    with pytest.raises(RuntimeError, match="size mismatch"):
        new.prompt_learner.load_state_dict(base.prompt_learner.state_dict())


def test_bad_options_are_rejected(tiny_clip):
    with pytest.raises(ValueError, match="CLASS_TOKEN_POSITION"):
        build(tiny_clip, class_token_position="start")
    with pytest.raises(ValueError, match="N_CTX"):
        build(tiny_clip, n_ctx=0)


def test_upstream_ctx_init_rule_counts_words_and_ignores_csc(tiny_clip):
    """CTX_INIT_RULE upstream, as CoOp's code: "itap of a" is 4 BPE tokens (it-ap) but 3 words, so 3 context
    vectors (the embeddings of its first 3 tokens) and the last init token stays fixed text; CSC is ignored."""
    from clip import tokenize

    ours = build(tiny_clip, ctx_init="itap of a", csc=True).prompt_learner
    upstream = build(tiny_clip, ctx_init="itap of a", csc=True, ctx_init_rule="upstream").prompt_learner
    assert ours.ctx.shape == (len(CLASSES), 4, 64) and upstream.ctx.shape == (3, 64)  # class-specific vs shared
    tokens = tokenize("itap of a dog.")[0]
    with torch.no_grad():
        embedding = tiny_clip.token_embedding(tokens)
        assert torch.equal(upstream.ctx, embedding[1:4])
        assert torch.equal(upstream()[0], embedding)  # "end": the init text itself, as with our rule
        for position in ("middle", "front"):  # upstream takes the class name's length from after its 3 vectors
            theirs = build(tiny_clip, ctx_init="itap of a", ctx_init_rule="upstream", class_token_position=position)
            mine = build(tiny_clip, ctx_init="itap of a", class_token_position=position)
            name, rest = embedding[4:5], embedding[5:]  # upstream's "name": the init's last token ("a")
            expected = (torch.cat([embedding[:1], embedding[1:2], name, embedding[2:4], rest]) if position == "middle"
                        else torch.cat([embedding[:1], name, embedding[1:4], rest]))
            assert torch.equal(theirs.prompt_learner()[0], expected), position
            assert not torch.equal(theirs.prompt_learner()[0], mine.prompt_learner()[0])
    with pytest.raises(ValueError, match="CTX_INIT_RULE"):
        build(tiny_clip, ctx_init="a photo of a", ctx_init_rule="words")
