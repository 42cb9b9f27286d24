"""Dassl trainer for CoOp."""
from dassl.engine import TRAINER_REGISTRY

from .base import PromptTrainer
from .models.coop import CoOpCLIP


@TRAINER_REGISTRY.register()
class CoOp(PromptTrainer):
    """Context Optimization (Zhou et al., IJCV 2022): a learned text context, frozen CLIP."""

    cfg_key = "COOP"

    def build_prompt_model(self, classnames, clip_model):
        c = self.trainer_cfg
        return CoOpCLIP(classnames, clip_model, n_ctx=c.N_CTX, ctx_init=c.CTX_INIT, csc=c.CSC,
                        class_token_position=c.CLASS_TOKEN_POSITION, ctx_init_rule=c.CTX_INIT_RULE)
