"""PromptKD: unsupervised prompt distillation (Li et al., CVPR 2024).

A large prompted CLIP, the teacher (PromptSRC's prompts on ViT-L/14, ``models/ivlp.py``), labels every
training image of every class with its logits; a small CLIP, the student, learns IVLP-style vision
prompts and a projector from its image features to the teacher's feature space so that its logits
against the teacher's text features match the teacher's. The student has no text tower of its own:
it classifies with the teacher's text features, computed once.

- ``FeatureProjector``: upstream's two-layer projector, 1x1 convolutions on [N, C, 1, 1] with batch
  normalisation between (``Conv - BN - ReLU - Conv``, upstream's parameter shapes).
- ``PromptKDLearner``: the student's learnable tensors: ``vision_ctx``, ``deep_vision``, ``projector``.
- ``PromptKDCLIP``: the student; ``forward`` gives logits over the classes being evaluated.
- ``TextPromptCopy``: a learnable copy of the teacher's text prompts, the text side DPC gives PromptKD
  (``trainers/promptkd.py``); it reuses the teacher's text tower, so nothing large is copied.
- ``distillation_loss``: upstream's L_kd.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..dpc.errors import ConfigError
from ..encoders import PromptedVisionEncoder, require_vit
from .vl_prompts import check_depth, deep_prompts, new_prompt, vision_layers, vision_width


class FeatureProjector(nn.Module):
    """Maps student image features [N, in_dim] to the teacher's feature space [N, out_dim]."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(in_dim, out_dim, 1), nn.BatchNorm2d(out_dim), nn.ReLU(inplace=True),
                                    nn.Conv2d(out_dim, out_dim, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features[:, :, None, None]).flatten(1)


class PromptKDLearner(nn.Module):
    """Vision prompts of the student (``vision_ctx`` and ``deep_vision``, N(0, 0.02) as upstream) and the
    projector. ``depth_vision`` counts the blocks that see prompts (>= 1)."""

    def __init__(self, clip_model, teacher_dim: int, n_ctx_vision: int = 4, depth_vision: int = 9):
        super().__init__()
        require_vit(clip_model, "PromptKD")
        check_depth("PROMPTKD.PROMPT_DEPTH_VISION", depth_vision, vision_layers(clip_model), minimum=1)
        if n_ctx_vision < 1:
            raise ConfigError(f"PROMPTKD.N_CTX_VISION must be >= 1, got {n_ctx_vision}")
        width = vision_width(clip_model)
        self.vision_ctx = new_prompt(n_ctx_vision, width)
        self.deep_vision = deep_prompts(depth_vision - 1, n_ctx_vision, width)
        self.projector = FeatureProjector(clip_model.visual.output_dim, teacher_dim)
        print(f"PromptKD student: {n_ctx_vision} vision tokens (depth {depth_vision}), projector "
              f"{clip_model.visual.output_dim} -> {teacher_dim}")

    def deep_vision_prompts(self) -> List[torch.Tensor]:
        return [self.deep_vision[i] for i in range(len(self.deep_vision))]


class PromptKDCLIP(nn.Module):
    """The student: a prompted CLIP image tower and the projector, scored against fixed text features.

    ``text_features`` [C, D_teacher]: the teacher's normalised text features of the classes this model
    classifies (a non-persistent buffer, set by the trainer).
    """

    def __init__(self, clip_model, text_features: torch.Tensor, n_ctx_vision: int = 4, depth_vision: int = 9):
        super().__init__()
        self.prompt_learner = PromptKDLearner(clip_model, text_features.shape[1], n_ctx_vision, depth_vision)
        self.image_encoder = PromptedVisionEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale
        self.dtype = clip_model.dtype
        self.register_buffer("text_features", text_features.float(), persistent=False)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Projected student image features [N, D_teacher] (not normalised), in fp32."""
        pl = self.prompt_learner
        features = self.image_encoder(image, pl.vision_ctx, pl.deep_vision_prompts())
        return pl.projector(features.float())

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        return self.logit_scale.exp().float() * F.normalize(image_features, dim=-1) @ text_features.t()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.logits(self.encode_image(image), self.text_features)


class TextPromptCopy(nn.Module):
    """A learnable copy of a teacher's text prompts (``ctx`` and ``deep_text``), read through the teacher's
    own text tower: ``features(teacher, rows)`` are the text features of the teacher's classes ``rows``."""

    def __init__(self, teacher_learner):
        super().__init__()
        self.ctx = nn.Parameter(teacher_learner.ctx.detach().clone().float())
        self.deep_text = nn.ParameterList([nn.Parameter(p.detach().clone().float()) for p in teacher_learner.deep_text])

    def features(self, teacher, rows: Sequence[int]) -> torch.Tensor:
        pl = teacher.prompt_learner
        rows = torch.as_tensor(list(rows), device=pl.tokenized_prompts.device)
        prompts = pl.text_prompts(ctx=self.ctx)[rows]
        deep = [self.deep_text[i] for i in range(len(self.deep_text))]
        return teacher.text_encoder(prompts, pl.tokenized_prompts[rows], deep).float()


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Upstream's L_kd: KL(softmax(teacher / T) || softmax(student / T)) summed, times T^2, divided by the
    number of logits (in fp32)."""
    t = float(temperature)
    kl = F.kl_div(F.log_softmax(student_logits.float() / t, dim=1), F.softmax(teacher_logits.float() / t, dim=1),
                  reduction="sum")
    return kl * (t * t) / student_logits.numel()
