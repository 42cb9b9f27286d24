"""PromptSRC: prompting with self-regulating constraints (Khattak et al., ICCV 2023).

Independent deep prompts on both towers (IVLP) plus three terms that keep the prompted model close
to frozen CLIP: L1 between the normalised prompted and frozen text features, L1 between the
normalised prompted and frozen image features, and a KL term between the prompted and zero-shot
logits. The frozen text features average an ensemble of hand-written templates.

The frozen side reuses the same CLIP weights (the image tower without prompts) and keeps the
template features in a non-persistent buffer outside ``prompt_learner``, so checkpoints hold
prompts only.
"""
from __future__ import annotations

import copy
from typing import Dict, List, NamedTuple, Sequence

import clip
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..encoders import PromptedCLIP, PromptedVisionEncoder, TextEncoder, require_vit
from ..templates import IMAGENET_TEMPLATES, fill
from .vl_prompts import (TextContextLearner, check_depth, deep_prompts, text_layers,
                         vision_layers, vision_width)


class PromptSRCPromptLearner(TextContextLearner):
    """Text context ``ctx`` and ``deep_text``; vision prompt ``vision_ctx`` and ``deep_vision``.

    A depth counts the blocks that see prompts: text depth >= 1; vision depth 0 leaves the image
    tower unprompted. Vision and deep prompts start N(0, 0.02) in fp32, as upstream.
    """

    def __init__(self, classnames: Sequence[str], clip_model, n_ctx_text: int = 4, n_ctx_vision: int = 4,
                 ctx_init: str = "a photo of a", depth_text: int = 9, depth_vision: int = 9):
        require_vit(clip_model, "PromptSRC")
        check_depth("PROMPTSRC.PROMPT_DEPTH_TEXT", depth_text, text_layers(clip_model), minimum=1)
        check_depth("PROMPTSRC.PROMPT_DEPTH_VISION", depth_vision, vision_layers(clip_model), minimum=0)
        if depth_vision > 0 and n_ctx_vision < 1:
            raise ValueError(f"PROMPTSRC.N_CTX_VISION must be >= 1 with vision prompts, got {n_ctx_vision}")
        super().__init__(classnames, clip_model, n_ctx_text, ctx_init)
        v_width = vision_width(clip_model)
        self.deep_text = deep_prompts(depth_text - 1, n_ctx_text, self.ctx.shape[-1])
        if depth_vision > 0:
            vision_ctx = torch.empty(n_ctx_vision, v_width)
            nn.init.normal_(vision_ctx, std=0.02)
            self.vision_ctx = nn.Parameter(vision_ctx)
        else:
            self.register_parameter("vision_ctx", None)
        self.deep_vision = deep_prompts(max(depth_vision - 1, 0), n_ctx_vision, v_width)
        print(f"PromptSRC: text context {self.prompt_text!r} ({n_ctx_text} tokens, depth {depth_text}), "
              f"{n_ctx_vision if depth_vision else 0} vision tokens (depth {depth_vision})")

    def deep_vision_prompts(self) -> List[torch.Tensor]:
        return [self.deep_vision[i] for i in range(len(self.deep_vision))]


@torch.no_grad()
def zero_shot_text_features(clip_model, classnames: Sequence[str], templates: Sequence[str] = IMAGENET_TEMPLATES):
    """Normalised mean over ``templates`` of frozen CLIP's text features of each class, [n_cls, dim], fp32.

    As upstream, the templates are encoded by an fp32 text tower (a temporary copy when CLIP is fp16)
    and the unnormalised features are averaged before normalising.
    """
    encoder = TextEncoder(clip_model)
    if clip_model.dtype != torch.float32:
        encoder = copy.deepcopy(encoder).float()
        encoder.dtype = torch.float32
    device = clip_model.token_embedding.weight.device
    features = []
    for template in templates:
        tokens = clip.tokenize([fill(template, name) for name in classnames]).to(device)
        embedding = clip_model.token_embedding(tokens).float()
        features.append(encoder(embedding, tokens).float())
    return F.normalize(torch.stack(features).mean(dim=0), dim=-1)


class SCLOutputs(NamedTuple):
    """What the self-regulating terms compare (features L2-normalised)."""
    logits: torch.Tensor
    text_features: torch.Tensor
    image_features: torch.Tensor
    zs_text_features: torch.Tensor
    zs_image_features: torch.Tensor
    zs_logits: torch.Tensor


def self_regulating_losses(out: SCLOutputs, text_weight: float, image_weight: float) -> Dict[str, torch.Tensor]:
    """PromptSRC's L_SCL terms (computed in fp32).

    The logit term is ``KL(softmax(zs_logits) || softmax(logits))`` summed and divided by the number
    of logits, i.e. upstream's ``kl_div(log_softmax(logits), log_softmax(zs_logits), 'sum',
    log_target=True) / logits.numel()``.
    """
    text = F.l1_loss(out.text_features.float(), out.zs_text_features.float()) * text_weight
    image = F.l1_loss(out.image_features.float(), out.zs_image_features.float()) * image_weight
    logits = F.kl_div(F.log_softmax(out.logits.float(), dim=1), F.log_softmax(out.zs_logits.float(), dim=1),
                      reduction="sum", log_target=True) / out.logits.numel()
    return {"scl_text": text, "scl_image": image, "scl_logits": logits}


class PromptSRCCLIP(PromptedCLIP):
    """Frozen CLIP ViT with independent vision and language deep prompts, and its zero-shot twin."""

    def __init__(self, classnames, clip_model, templates: Sequence[str] = IMAGENET_TEMPLATES, **prompt_options):
        super().__init__(clip_model)
        self.prompt_learner = PromptSRCPromptLearner(classnames, clip_model, **prompt_options)
        self.text_encoder = TextEncoder(clip_model)
        self.image_encoder = PromptedVisionEncoder(clip_model)
        self.register_buffer("zs_text_features", zero_shot_text_features(clip_model, classnames, templates),
                             persistent=False)

    def encode_text(self):
        pl = self.prompt_learner
        return self.text_encoder(pl.text_prompts(), pl.tokenized_prompts, pl.deep_text_prompts())

    def encode_image(self, image):
        pl = self.prompt_learner
        if pl.vision_ctx is None:
            return self.image_encoder(image)
        return self.image_encoder(image, pl.vision_ctx, pl.deep_vision_prompts())

    @torch.no_grad()
    def encode_zero_shot_image(self, image):
        """Frozen CLIP's image features (CLIP's own ViT forward, no prompts)."""
        return self.image_encoder.visual(image.type(self.dtype))

    def scl_outputs(self, image, image_features=None, text_features=None) -> SCLOutputs:
        """Prompted logits and the features the self-regulating terms need, for one training batch.

        ``image_features`` / ``text_features``: the prompted features of ``image`` and of all classes
        when the caller has them already (DPC stage 2); encoded here otherwise.
        """
        scale = self.logit_scale.exp()
        image_features = F.normalize(self.encode_image(image) if image_features is None else image_features, dim=-1)
        text_features = F.normalize(self.encode_text() if text_features is None else text_features, dim=-1)
        logits = scale * image_features @ text_features.t()
        with torch.no_grad():
            zs_image = F.normalize(self.encode_zero_shot_image(image), dim=-1)
            zs_logits = scale * zs_image @ self.zs_text_features.to(zs_image.dtype).t()
        return SCLOutputs(logits, text_features, image_features, self.zs_text_features, zs_image, zs_logits)
