"""Frozen CLIP's text features of hand-written prompts (the "knowledge" PromptSRC and KgCoOp regularise towards)."""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F

from ..encoders import TextEncoder, tokenize
from ..templates import IMAGENET_TEMPLATES, fill


@torch.no_grad()
def zero_shot_text_features(clip_model, classnames: Sequence[str], templates: Sequence[str] = IMAGENET_TEMPLATES):
    """Normalised mean over ``templates`` of frozen CLIP's text features of each class, [n_cls, dim], fp32.

    The templates are encoded by an fp32 text tower (a temporary copy when CLIP is fp16) and the
    unnormalised features are averaged before normalising (with one template: its normalised features).
    """
    encoder = TextEncoder(clip_model)
    if clip_model.dtype != torch.float32:
        encoder = copy.deepcopy(encoder).float()
        encoder.dtype = torch.float32
    device = clip_model.token_embedding.weight.device
    features = []
    for template in templates:
        tokens = tokenize(clip_model, [fill(template, name) for name in classnames]).to(device)
        embedding = clip_model.token_embedding(tokens).float()
        features.append(encoder(embedding, tokens).float())
    return F.normalize(torch.stack(features).mean(dim=0), dim=-1)
