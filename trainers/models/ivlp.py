"""IVLP: independent vision-language prompting, the deep-prompt baseline of MaPLe (Khattak et al., CVPR 2023).

Each tower has its own prompts and nothing couples them:
- text: ``ctx`` in front of the rest of CTX_INIT and the class name, and ``deep_text[i]`` replacing the
  prompt tokens before block i + 1 (text depth - 1 of them);
- vision: ``vision_ctx`` appended after the patch tokens, and ``deep_vision[i]`` replacing them before
  block i + 1 (vision depth - 1 of them); vision depth 0 leaves the image tower as CLIP has it.

PromptSRC learns exactly these prompts with extra constraints; ``models/promptsrc.py`` builds on this module.
"""
from __future__ import annotations

from typing import List, Sequence

import torch

from ..encoders import PromptedCLIP, PromptedVisionEncoder, TextEncoder, require_vit
from ..dpc.errors import ConfigError
from .vl_prompts import (TextContextLearner, check_depth, deep_prompts, new_prompt, text_layers,
                         vision_layers, vision_width)


class IVLPPromptLearner(TextContextLearner):
    """Text context ``ctx`` and ``deep_text``; vision prompt ``vision_ctx`` and ``deep_vision``.

    A depth counts the blocks that see prompts: text depth >= 1; vision depth 0 leaves the image
    tower unprompted. Vision and deep prompts start N(0, 0.02) in fp32, as upstream. ``cfg_key`` and
    ``method`` only name the config node and the method in messages.
    """

    def __init__(self, classnames: Sequence[str], clip_model, n_ctx_text: int = 2, n_ctx_vision: int = 2,
                 ctx_init: str = "a photo of a", depth_text: int = 9, depth_vision: int = 9,
                 cfg_key: str = "IVLP", method: str = "IVLP"):
        require_vit(clip_model, method)
        check_depth(f"{cfg_key}.PROMPT_DEPTH_TEXT", depth_text, text_layers(clip_model), minimum=1)
        check_depth(f"{cfg_key}.PROMPT_DEPTH_VISION", depth_vision, vision_layers(clip_model), minimum=0)
        if depth_vision > 0 and n_ctx_vision < 1:
            raise ConfigError(f"{cfg_key}.N_CTX_VISION must be >= 1 with vision prompts, got {n_ctx_vision}")
        super().__init__(classnames, clip_model, n_ctx_text, ctx_init)
        v_width = vision_width(clip_model)
        self.deep_text = deep_prompts(depth_text - 1, n_ctx_text, self.ctx.shape[-1])
        if depth_vision > 0:
            self.vision_ctx = new_prompt(n_ctx_vision, v_width)
        else:
            self.register_parameter("vision_ctx", None)
        self.deep_vision = deep_prompts(max(depth_vision - 1, 0), n_ctx_vision, v_width)
        print(f"{method}: text context {self.prompt_text!r} ({n_ctx_text} tokens, depth {depth_text}), "
              f"{n_ctx_vision if depth_vision else 0} vision tokens (depth {depth_vision})")

    def deep_vision_prompts(self) -> List[torch.Tensor]:
        return [self.deep_vision[i] for i in range(len(self.deep_vision))]


class IVLPCLIP(PromptedCLIP):
    """Frozen CLIP ViT with independent deep prompts on the text and the image tower."""

    learner_class = IVLPPromptLearner

    def __init__(self, classnames, clip_model, **prompt_options):
        super().__init__(clip_model)
        self.prompt_learner = self.learner_class(classnames, clip_model, **prompt_options)
        self.text_encoder = TextEncoder(clip_model)
        self.image_encoder = PromptedVisionEncoder(clip_model)

    def encode_text(self):
        pl = self.prompt_learner
        return self.text_encoder(pl.text_prompts(), pl.tokenized_prompts, pl.deep_text_prompts())

    def encode_image(self, image):
        pl = self.prompt_learner
        if pl.vision_ctx is None:
            return self.image_encoder(image)
        return self.image_encoder(image, pl.vision_ctx, pl.deep_vision_prompts())
