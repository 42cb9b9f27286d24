"""Pieces shared by the prompt learners with a CTX_INIT phrase (MaPLe, IVLP, PromptSRC, CoCoOp).

Each learns a text context in front of the rest of the CTX_INIT phrase and the class name,
"<ctx_1 .. ctx_n> <rest of CTX_INIT> <class>."; the deep-prompt learners add prompts for later blocks.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn as nn

from ..encoders import count_tokens, embed_texts
from ..dpc.errors import ConfigError


def text_layers(clip_model) -> int:
    return len(clip_model.transformer.resblocks)


def vision_layers(clip_model) -> int:
    return len(clip_model.visual.transformer.resblocks)


def vision_width(clip_model) -> int:
    return clip_model.visual.conv1.out_channels


def check_depth(key: str, depth: int, n_layers: int, minimum: int = 1) -> None:
    """A prompt depth counts the blocks that see prompts: ``minimum`` .. number of layers."""
    if not minimum <= depth <= n_layers:
        raise ConfigError(f"{key} must be between {minimum} and the number of transformer layers "
                         f"({n_layers}), got {depth}")


def check_image_size(size, clip_model, source: str = "") -> None:
    """Images must have CLIP's input size (``size``: INPUT.SIZE, (H, W) or one int).

    Every CLIP image encoder has a positional embedding for a fixed grid (ViT patches, the ResNet's
    attention pool), and prompt tokens are appended to it; ``source`` names the weights in the message.
    """
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    expected = clip_model.visual.input_resolution
    if (h, w) != (expected, expected):
        of = f" of {source}" if source else ""
        raise ConfigError(f"INPUT.SIZE is ({h}, {w}) but the CLIP image encoder{of} takes {expected}x{expected} "
                         f"images (its positional embedding has a fixed size): set INPUT.SIZE \"({expected}, "
                         f"{expected})\", or use CLIP weights made for {h}x{w} images")


def new_prompt(n_ctx: int, width: int) -> nn.Parameter:
    """A prompt of ``n_ctx`` tokens, initialised N(0, 0.02) in fp32 as upstream."""
    p = torch.empty(n_ctx, width)
    nn.init.normal_(p, std=0.02)
    return nn.Parameter(p)


def deep_prompts(count: int, n_ctx: int, width: int) -> nn.ParameterList:
    """``count`` prompts of ``n_ctx`` tokens (``new_prompt``)."""
    return nn.ParameterList([new_prompt(n_ctx, width) for _ in range(count)])


class TextContextLearner(nn.Module):
    """Learned text context ``ctx`` [n_ctx, width] and the frozen token embeddings around it.

    With CTX_INIT, ``ctx`` starts as the embeddings of its first ``n_ctx`` tokens and the rest of
    the phrase stays fixed text (MaPLe's 2 tokens of "a photo of a" give "a photo" learned and
    "of a" fixed). Class-dependent buffers are rebuilt from the class names and not saved.
    """

    def __init__(self, classnames: Sequence[str], clip_model, n_ctx: int, ctx_init: str = ""):
        super().__init__()
        if n_ctx < 1:
            raise ConfigError(f"the number of text context tokens must be >= 1, got {n_ctx}")
        dtype = clip_model.dtype
        width = clip_model.ln_final.weight.shape[0]
        ctx_init = ctx_init.replace("_", " ").strip()
        if ctx_init:
            available = count_tokens(ctx_init)
            if n_ctx > available:
                raise ConfigError(f"{n_ctx} context tokens requested but CTX_INIT {ctx_init!r} has only "
                                 f"{available}; lower N_CTX or use a longer CTX_INIT (or '' for random init)")
            _, embedding = embed_texts(clip_model, [ctx_init])
            ctx = embedding[0, 1:1 + n_ctx].clone()
            prefix_text = ctx_init
        else:
            ctx = torch.empty(n_ctx, width, dtype=dtype)
            nn.init.normal_(ctx, std=0.02)
            prefix_text = " ".join(["X"] * n_ctx)
        self.ctx = nn.Parameter(ctx)

        names = [name.replace("_", " ") for name in classnames]
        tokens, embedding = embed_texts(clip_model, [f"{prefix_text} {name}." for name in names])
        self.register_buffer("tokenized_prompts", tokens, persistent=False)
        self.register_buffer("token_prefix", embedding[:, :1], persistent=False)  # SOS
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:], persistent=False)  # rest, class, '.', EOS
        self.n_cls, self.n_ctx = len(names), n_ctx
        self.prompt_text = prefix_text

    def text_prompts(self, ctx: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Token embeddings [n_cls, context length, width] with the learned context, or with ``ctx`` [n_ctx, width] instead."""
        ctx = self.ctx if ctx is None else ctx
        ctx = ctx.unsqueeze(0).expand(self.n_cls, -1, -1).to(self.token_prefix.dtype)
        return torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)

    def deep_text_prompts(self) -> List[torch.Tensor]:
        """The deep text prompts (``deep_text``, set by subclasses), read at call time."""
        return [self.deep_text[i] for i in range(len(self.deep_text))]
