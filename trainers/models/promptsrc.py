"""PromptSRC: prompting with self-regulating constraints (Khattak et al., ICCV 2023).

Independent deep prompts on both towers (IVLP, ``models/ivlp.py``) plus three terms that keep the prompted model close
to frozen CLIP: L1 between the normalised prompted and frozen text features, L1 between the
normalised prompted and frozen image features, and a KL term between the prompted and zero-shot
logits. The frozen text features average an ensemble of hand-written templates.

The frozen side reuses the same CLIP weights (the image tower without prompts) and keeps the
template features in a non-persistent buffer outside ``prompt_learner``, so checkpoints hold
prompts only.
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Sequence

import torch
import torch.nn.functional as F

from ..templates import IMAGENET_TEMPLATES
from .ivlp import IVLPCLIP, IVLPPromptLearner
from .zero_shot import zero_shot_text_features


class PromptSRCPromptLearner(IVLPPromptLearner):
    """IVLP's prompts (``ctx``, ``deep_text``, ``vision_ctx``, ``deep_vision``) with PromptSRC's defaults."""

    def __init__(self, classnames: Sequence[str], clip_model, n_ctx_text: int = 4, n_ctx_vision: int = 4,
                 ctx_init: str = "a photo of a", depth_text: int = 9, depth_vision: int = 9):
        super().__init__(classnames, clip_model, n_ctx_text, n_ctx_vision, ctx_init, depth_text, depth_vision,
                         cfg_key="PROMPTSRC", method="PromptSRC")


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


class PromptSRCCLIP(IVLPCLIP):
    """IVLP's prompted CLIP ViT with its zero-shot twin (the frozen template features)."""

    learner_class = PromptSRCPromptLearner

    def __init__(self, classnames, clip_model, templates: Sequence[str] = IMAGENET_TEMPLATES, **prompt_options):
        super().__init__(classnames, clip_model, **prompt_options)
        self.register_buffer("zs_text_features", zero_shot_text_features(clip_model, classnames, templates),
                             persistent=False)

    @torch.no_grad()
    def encode_zero_shot_image(self, image):
        """Frozen CLIP's image features (CLIP's own ViT forward, no prompts)."""
        return self.image_encoder.visual(image.type(self.dtype))

    def scl_outputs(self, image, image_features=None, text_features=None, classes=None) -> SCLOutputs:
        """Prompted logits and the features the self-regulating terms need, for one training batch.

        ``image_features`` / ``text_features``: the prompted features of ``image`` and of all classes
        when the caller has them already (DPC stage 2); encoded here otherwise. ``classes``: the rows of the
        classes ``text_features`` holds (then the terms compare those classes only), else all.
        """
        scale = self.logit_scale.exp()
        image_features = F.normalize(self.encode_image(image) if image_features is None else image_features, dim=-1)
        text_features = F.normalize(self.encode_text() if text_features is None else text_features, dim=-1)
        logits = scale * image_features @ text_features.t()
        with torch.no_grad():
            zs_image = F.normalize(self.encode_zero_shot_image(image), dim=-1)
            zs_text = self.zs_text_features if classes is None else self.zs_text_features[classes]
            zs_logits = scale * zs_image @ zs_text.to(zs_image.dtype).t()
        return SCLOutputs(logits, text_features, image_features, zs_text, zs_image, zs_logits)
