"""Dassl trainer for CoCoOp."""
from dassl.engine import TRAINER_REGISTRY

from .base import PromptTrainer
from .models.cocoop import CoCoOpCLIP


@TRAINER_REGISTRY.register()
class CoCoOp(PromptTrainer):
    """Conditional Context Optimization (Zhou et al., CVPR 2022): a context shifted per image by a Meta-Net.

    The loss is cross-entropy over the per-image logits (``PromptTrainer.compute_loss``).
    """

    cfg_key = "COCOOP"

    def build_prompt_model(self, classnames, clip_model):
        c = self.trainer_cfg
        return CoCoOpCLIP(classnames, clip_model, n_ctx=c.N_CTX, ctx_init=c.CTX_INIT)
