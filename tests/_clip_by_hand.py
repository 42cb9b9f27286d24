"""CLIP forwards written out by hand from CLIP's own modules, independent of ``trainers.encoders``.

The backbone tests compare our models against these, on the same tiny fp32 weights and inputs.
"""
from __future__ import annotations

from typing import Sequence

import clip
import torch


def sentence_embeddings(clip_model, sentences: Sequence[str]):
    """(token ids [n, 77], token embeddings [n, 77, width]) of whole sentences."""
    tokens = clip.tokenize(list(sentences))
    return tokens, clip_model.token_embedding(tokens)


def text_features(clip_model, embeddings: torch.Tensor, tokens: torch.Tensor, deep=()) -> torch.Tensor:
    """CLIP's text tower on token embeddings [n, 77, width]; ``deep[j - 1]`` [n_ctx, width] overwrites
    tokens 1 .. n_ctx before block j (IVLP). Without ``deep`` this is CLIP's own ``transformer`` call."""
    x = (embeddings + clip_model.positional_embedding).permute(1, 0, 2)
    if not deep:
        x = clip_model.transformer(x)
    else:
        for j, block in enumerate(clip_model.transformer.resblocks):
            if 1 <= j <= len(deep):
                x = x.clone()
                x[1:1 + deep[j - 1].shape[0]] = deep[j - 1].unsqueeze(1)
            x = block(x)
    x = clip_model.ln_final(x.permute(1, 0, 2))
    return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ clip_model.text_projection


def image_features(clip_model, images: torch.Tensor, prompt=None, deep=()) -> torch.Tensor:
    """CLIP's ViT with ``prompt`` [n_ctx, width] appended after the patch tokens (after the positional
    embedding, before ln_pre) and ``deep[j - 1]`` overwriting those tokens before block j (IVLP)."""
    v = clip_model.visual
    x = v.conv1(images).flatten(2).permute(0, 2, 1)  # [N, grid**2, width]
    cls = v.class_embedding.expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + v.positional_embedding
    if prompt is not None:
        x = torch.cat([x, prompt.expand(x.shape[0], -1, -1)], dim=1)
    x = v.ln_pre(x).permute(1, 0, 2)
    for j, block in enumerate(v.transformer.resblocks):
        if 1 <= j <= len(deep):
            x = x.clone()
            x[-deep[j - 1].shape[0]:] = deep[j - 1].unsqueeze(1)
        x = block(x)
    return v.ln_post(x[0]) @ v.proj


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)
