"""MaPLe: multi-modal prompt learning (Khattak et al., CVPR 2023).

Text prompts are learned; the vision prompts are produced from them by learned linear coupling
functions (text width -> vision width), at the input and at every deep layer up to the prompt depth.
Everything learnable lives in ``prompt_learner`` and is read at forward time (DPC wraps it).
"""
from __future__ import annotations

import copy
from typing import List, Sequence

import torch
import torch.nn as nn

from ..encoders import require_vit
from .ivlp import IVLPCLIP
from .vl_prompts import (TextContextLearner, check_depth, deep_prompts, text_layers,
                         vision_layers, vision_width)


class MaPLePromptLearner(TextContextLearner):
    """Text context ``ctx``, deep text prompts and the text->vision coupling layers.

    - ``ctx`` [n_ctx, text width]: input text prompt (in CLIP's dtype, as upstream).
    - ``proj``: couples ``ctx`` to the input vision prompt.
    - ``deep_text[i]`` [n_ctx, text width]: text prompt before block i + 1 (prompt depth - 1 of them).
    - ``deep_proj[i]``: couples ``deep_text[i]`` to the vision prompt before block i + 1. As upstream,
      all deep coupling layers start as copies of one randomly initialised layer.
    """

    def __init__(self, classnames: Sequence[str], clip_model, n_ctx: int = 2, ctx_init: str = "a photo of a",
                 prompt_depth: int = 9):
        require_vit(clip_model, "MaPLe")
        check_depth("MaPLe PROMPT_DEPTH", prompt_depth, min(text_layers(clip_model), vision_layers(clip_model)))
        super().__init__(classnames, clip_model, n_ctx, ctx_init)
        width, v_width = self.ctx.shape[-1], vision_width(clip_model)
        self.proj = nn.Linear(width, v_width).to(clip_model.dtype)
        self.deep_text = deep_prompts(prompt_depth - 1, n_ctx, width)
        coupling = nn.Linear(width, v_width)
        self.deep_proj = nn.ModuleList(copy.deepcopy(coupling) for _ in range(prompt_depth - 1))
        self.prompt_depth = prompt_depth
        print(f"MaPLe: context {self.prompt_text!r} ({n_ctx} learned tokens), prompt depth {prompt_depth}, "
              f"text width {width} -> vision width {v_width}")

    def vision_prompt(self) -> torch.Tensor:
        return self.proj(self.ctx)

    def deep_vision_prompts(self) -> List[torch.Tensor]:
        return [layer(self.deep_text[i]) for i, layer in enumerate(self.deep_proj)]


class MaPLeCLIP(IVLPCLIP):
    """Frozen CLIP ViT with MaPLe's coupled text and vision prompts (the text side as IVLP's)."""

    learner_class = MaPLePromptLearner

    def encode_image(self, image):
        pl = self.prompt_learner
        return self.image_encoder(image, pl.vision_prompt(), pl.deep_vision_prompts())
