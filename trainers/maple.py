"""Dassl trainer for MaPLe."""
from dassl.engine import TRAINER_REGISTRY

from .base import PromptTrainer
from .models.maple import MaPLeCLIP


@TRAINER_REGISTRY.register()
class MaPLe(PromptTrainer):
    """Multi-modal Prompt Learning (Khattak et al., CVPR 2023): coupled text and vision deep prompts."""

    cfg_key = "MAPLE"

    def build_prompt_model(self, classnames, clip_model):
        c = self.trainer_cfg
        return MaPLeCLIP(classnames, clip_model, n_ctx=c.N_CTX, ctx_init=c.CTX_INIT, prompt_depth=c.PROMPT_DEPTH)
