"""Deep prompts in fp16 models: cast after expanding, so the batch sum of the gradient stays fp32 (as upstream)."""
import pytest
import torch

from trainers.encoders import replace_text_prompt, replace_vision_prompt

N_TOKENS, BATCH, WIDTH = 6, 40, 8


@pytest.mark.parametrize("replace,rows", [(replace_text_prompt, slice(1, 3)), (replace_vision_prompt, slice(4, 6))])
def test_fp32_deep_prompt_gradient_is_summed_over_the_batch_in_fp32(replace, rows):
    x = torch.zeros(N_TOKENS, BATCH, WIDTH, dtype=torch.float16)  # sequence-first fp16 activations
    prompt = torch.zeros(2, WIDTH, requires_grad=True)  # fp32 deep prompt, as upstream MaPLe/PromptSRC
    out = replace(x, prompt)
    assert out.dtype == torch.float16
    # 40 per-sample gradients of 1 + 2**-10: exact in fp32 (40.0390625), 40.03125 if summed in fp16
    upstream = torch.zeros_like(out)
    upstream[rows] = 1 + 2 ** -10
    out.backward(upstream)
    expected = upstream[rows].float().sum(dim=1)
    assert torch.equal(expected, torch.full((2, WIDTH), 40.0390625))
    assert torch.equal(prompt.grad, expected)


def test_tokenize_uses_the_models_context_length_and_names_a_prompt_that_does_not_fit():
    from tools.tiny_clip import build_tiny_clip
    from trainers.encoders import context_length, embed_texts, tokenize

    short = build_tiny_clip(layers=1, context_length=8)
    assert context_length(short) == 8
    tokens, embedding = embed_texts(short, ["a red circle."])
    assert tokens.shape == (1, 8) and embedding.shape[:2] == (1, 8)
    with pytest.raises(ValueError, match=r"'a photo of a big red circle\.' needs 10 tokens .* takes 8: use fewer"):
        tokenize(short, ["a red circle.", "a photo of a big red circle."])
