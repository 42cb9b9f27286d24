"""KgCoOp: knowledge-guided context optimization (Yao et al., CVPR 2023).

CoOp's learned context, trained with one more term that keeps the prompted text features close to
frozen CLIP's features of a hand-written prompt ("general knowledge"):

    L = CE + W * (1 - mean over classes of cos(w_i, w_i^clip))

where w_i is the text feature of class i under the learned context and w_i^clip frozen CLIP's
feature of the dataset's template filled with the class name. The frozen features are computed once,
kept in a non-persistent buffer (rebuilt from the class names, never saved) outside ``prompt_learner``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .coop import CoOpCLIP
from .zero_shot import zero_shot_text_features
from ..dpc.errors import ConfigError


def knowledge_guided_distance(text_features: torch.Tensor, frozen_text_features: torch.Tensor) -> torch.Tensor:
    """1 - mean cosine similarity between the prompted and the frozen text features of each class (fp32)."""
    if text_features.shape != frozen_text_features.shape:
        raise ValueError(f"prompted text features {tuple(text_features.shape)} and frozen CLIP text features "
                         f"{tuple(frozen_text_features.shape)} must be of the same classes")
    cos = F.cosine_similarity(F.normalize(text_features.float(), dim=-1), frozen_text_features.float(),
                              dim=-1, eps=1e-7)
    return 1.0 - cos.mean()


class KgCoOpCLIP(CoOpCLIP):
    """CoOp's model (context before the class name) and frozen CLIP's features of ``template``."""

    def __init__(self, classnames, clip_model, template: str = "a photo of a {}.", n_ctx: int = 4,
                 ctx_init: str = "a photo of a", csc: bool = False):
        if "{}" not in template:
            raise ConfigError(f"KGCOOP.TEMPLATE must contain '{{}}' where the class name goes, got {template!r}")
        super().__init__(classnames, clip_model, n_ctx=n_ctx, ctx_init=ctx_init, csc=csc, class_token_position="end")
        self.template = template
        self.register_buffer("frozen_text_features", zero_shot_text_features(clip_model, classnames, (template,)),
                             persistent=False)
        print(f"KgCoOp: frozen CLIP text features of {template!r}")

    def knowledge_guided_distance(self, text_features: torch.Tensor, classes=None) -> torch.Tensor:
        """KgCoOp's term (without its weight W) for the prompted text features of all classes (or of ``classes``)."""
        frozen = self.frozen_text_features if classes is None else self.frozen_text_features[classes]
        return knowledge_guided_distance(text_features, frozen)
