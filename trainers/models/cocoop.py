"""CoCoOp: conditional context optimization (Zhou et al., CVPR 2022).

CoOp's shared context plus a small Meta-Net that maps each image's normalised feature to one bias
vector added to every context token: each image gets its own prompts, so the text features are
[batch, n_cls, dim] and every image is scored against its own class features.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..encoders import PromptedCLIP, TextEncoder, count_tokens
from .vl_prompts import TextContextLearner
from ..dpc.errors import ConfigError


class CoCoOpPromptLearner(TextContextLearner):
    """Context ``ctx`` [n_ctx, width] and ``meta_net``: Linear(d, d // 16), ReLU, Linear(d // 16, width),
    with d CLIP's embedding size (the image feature size).

    As upstream: with CTX_INIT the context has as many tokens as the phrase (N_CTX is not used), and
    the Meta-Net is kept in CLIP's dtype (fp16 under PREC fp16).
    """

    def __init__(self, classnames: Sequence[str], clip_model, n_ctx: int = 16, ctx_init: str = ""):
        ctx_init = ctx_init.replace("_", " ").strip()
        if ctx_init:
            n_ctx = count_tokens(ctx_init)
        elif n_ctx < 1:
            raise ConfigError(f"COCOOP.N_CTX must be >= 1 when CTX_INIT is empty, got {n_ctx}")
        super().__init__(classnames, clip_model, n_ctx, ctx_init)
        feature_dim, width = clip_model.visual.output_dim, self.ctx.shape[-1]
        hidden = feature_dim // 16
        if hidden < 1:
            raise ConfigError(f"CoCoOp's Meta-Net needs an embedding size of at least 16, this CLIP has {feature_dim}")
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(feature_dim, hidden)),
            ("relu", nn.ReLU()),
            ("linear2", nn.Linear(hidden, width)),
        ])).to(clip_model.dtype)
        print(f"CoCoOp: context {self.prompt_text!r} ({n_ctx} tokens), Meta-Net {feature_dim} -> {hidden} -> {width}")

    def contexts(self, image_features: torch.Tensor) -> torch.Tensor:
        """Per-image contexts [batch, n_ctx, width]: ``ctx`` shifted by the Meta-Net's bias of each image.

        ``image_features`` [batch, d] are expected L2-normalised (CoCoOp's Meta-Net input).
        """
        bias = self.meta_net(image_features.to(self.meta_net.linear1.weight.dtype))  # [batch, width]
        return self.ctx.unsqueeze(0) + bias.unsqueeze(1)


class CoCoOpCLIP(PromptedCLIP):
    """Frozen CLIP with CoCoOp's image-conditioned prompts; the image tower is unprompted.

    The text tower runs once per image (all classes at a time), as upstream: this bounds the memory
    of an evaluation batch to one image's n_cls prompts.
    """

    def __init__(self, classnames, clip_model, **prompt_options):
        super().__init__(clip_model)
        self.prompt_learner = CoCoOpPromptLearner(classnames, clip_model, **prompt_options)
        self.image_encoder = clip_model.visual
        self.text_encoder = TextEncoder(clip_model)

    def encode_image(self, image):
        return self.image_encoder(image.type(self.dtype))

    def encode_text(self, image_features: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Text features [batch, n_cls, dim] of every class under each image's prompts.

        ``image_features``: the (unnormalised) ``encode_image`` output of the batch.
        """
        if image_features is None:
            raise ValueError("CoCoOp's prompts depend on the image: encode_text(image_features) needs the "
                             "features of the images the classes are scored against")
        pl = self.prompt_learner
        contexts = pl.contexts(F.normalize(image_features, dim=-1))
        return torch.stack([self.text_encoder(pl.text_prompts(ctx), pl.tokenized_prompts) for ctx in contexts])

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """[batch, n_cls] from per-image text features [batch, n_cls, dim] (or shared ones [n_cls, dim])."""
        if text_features.dim() == 2:
            return super().logits(image_features, text_features)
        image_features = F.normalize(image_features, dim=-1)
        text_features = F.normalize(text_features, dim=-1)
        return self.logit_scale.exp() * torch.einsum("bd,bcd->bc", image_features, text_features)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        image_features = self.encode_image(image)
        return self.logits(image_features, self.encode_text(image_features))
