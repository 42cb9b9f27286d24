"""CoOp: learned context vectors in front of (or around) the class name (Zhou et al., IJCV 2022)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ..dpc.errors import ConfigError
from ..encoders import PromptedCLIP, TextEncoder, count_tokens, embed_texts

CLASS_TOKEN_POSITIONS = ("end", "middle", "front")
# How CTX_INIT becomes the context. tokens: one context vector per BPE token of the init ("itap of a": 4),
# CSC copies it per class. upstream (github KaiyangZhou/CoOp): one per space-separated word ("itap of a": 3,
# the init's remaining tokens stay fixed text before the class name), and CSC is ignored (one shared context).
CTX_INIT_RULES = ("tokens", "upstream")


class CoOpPromptLearner(nn.Module):
    """Builds the token embeddings of "<ctx_1 .. ctx_n> <class name>." for every class.

    Only ``ctx`` is learned and stored in checkpoints; the class-dependent token buffers are
    rebuilt from the class names, so a context trained on base classes serves new classes.
    """

    def __init__(self, classnames: Sequence[str], clip_model, n_ctx: int = 16, ctx_init: str = "",
                 csc: bool = False, class_token_position: str = "end", ctx_init_rule: str = "tokens"):
        super().__init__()
        if class_token_position not in CLASS_TOKEN_POSITIONS:
            raise ConfigError(f"CLASS_TOKEN_POSITION must be one of {CLASS_TOKEN_POSITIONS}, got {class_token_position!r}")
        if ctx_init_rule not in CTX_INIT_RULES:
            raise ConfigError(f"CTX_INIT_RULE must be one of {CTX_INIT_RULES}, got {ctx_init_rule!r}")
        dtype = clip_model.dtype
        width = clip_model.ln_final.weight.shape[0]
        n_cls = len(classnames)

        if ctx_init:
            ctx_init = ctx_init.replace("_", " ").strip()
            if ctx_init_rule == "upstream":
                n_ctx, csc = len(ctx_init.split(" ")), False
            else:
                n_ctx = count_tokens(ctx_init)
            _, embedding = embed_texts(clip_model, [ctx_init])
            ctx = embedding[0, 1:1 + n_ctx].clone()
            if csc:
                ctx = ctx.unsqueeze(0).repeat(n_cls, 1, 1)
            prefix_text = ctx_init
        else:
            if n_ctx < 1:
                raise ConfigError("N_CTX must be >= 1 when CTX_INIT is empty")
            ctx = torch.empty(n_cls, n_ctx, width, dtype=dtype) if csc else torch.empty(n_ctx, width, dtype=dtype)
            nn.init.normal_(ctx, std=0.02)
            prefix_text = " ".join(["X"] * n_ctx)
        print(f"CoOp context: {prefix_text!r} ({n_ctx} tokens, {'class-specific' if csc else 'shared'})")
        self.ctx = nn.Parameter(ctx)

        names = [name.replace("_", " ") for name in classnames]
        self.name_lens = [count_tokens(name) for name in names]
        tokens, embedding = embed_texts(clip_model, [f"{prefix_text} {name}." for name in names])
        # Rebuilt from the class names: not saved in checkpoints.
        self.register_buffer("tokenized_prompts", tokens, persistent=False)
        self.register_buffer("token_prefix", embedding[:, :1], persistent=False)  # SOS
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:], persistent=False)  # class, '.', EOS
        self.n_cls, self.n_ctx, self.csc = n_cls, n_ctx, csc
        self.class_token_position = class_token_position

    def forward(self) -> torch.Tensor:
        ctx = self.ctx
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        elif ctx.shape[0] != self.n_cls:
            raise ValueError(f"class-specific context has {ctx.shape[0]} classes, the model has {self.n_cls}")
        ctx = ctx.to(self.token_prefix.dtype)
        prefix, suffix = self.token_prefix, self.token_suffix
        if self.class_token_position == "end":
            return torch.cat([prefix, ctx, suffix], dim=1)
        prompts = []
        for i, name_len in enumerate(self.name_lens):
            name, rest = suffix[i:i + 1, :name_len], suffix[i:i + 1, name_len:]
            if self.class_token_position == "middle":
                half = self.n_ctx // 2
                parts = [prefix[i:i + 1], ctx[i:i + 1, :half], name, ctx[i:i + 1, half:], rest]
            else:  # front
                parts = [prefix[i:i + 1], name, ctx[i:i + 1], rest]
            prompts.append(torch.cat(parts, dim=1))
        return torch.cat(prompts, dim=0)


class CoOpCLIP(PromptedCLIP):
    """Frozen CLIP with a CoOp prompt learner on the text side; the image tower is unprompted."""

    def __init__(self, classnames, clip_model, **prompt_options):
        super().__init__(clip_model)
        self.prompt_learner = CoOpPromptLearner(classnames, clip_model, **prompt_options)
        self.image_encoder = clip_model.visual
        self.text_encoder = TextEncoder(clip_model)

    def encode_image(self, image):
        return self.image_encoder(image.type(self.dtype))

    def encode_text(self):
        return self.text_encoder(self.prompt_learner(), self.prompt_learner.tokenized_prompts)
