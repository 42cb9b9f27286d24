"""Dassl trainer for IVLP."""
from dassl.engine import TRAINER_REGISTRY

from .base import PromptTrainer
from .models.ivlp import IVLPCLIP


@TRAINER_REGISTRY.register()
class IVLP(PromptTrainer):
    """Independent Vision-Language Prompting (MaPLe's baseline, Khattak et al., CVPR 2023): uncoupled deep
    prompts on both towers, trained with cross-entropy."""

    cfg_key = "IVLP"

    def build_prompt_model(self, classnames, clip_model):
        c = self.trainer_cfg
        return IVLPCLIP(classnames, clip_model, n_ctx_text=c.N_CTX_TEXT, n_ctx_vision=c.N_CTX_VISION,
                        ctx_init=c.CTX_INIT, depth_text=c.PROMPT_DEPTH_TEXT, depth_vision=c.PROMPT_DEPTH_VISION)
