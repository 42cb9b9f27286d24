"""Dassl trainer for KgCoOp: cross-entropy plus the knowledge-guided term."""
from dassl.engine import TRAINER_REGISTRY

from .base import PromptTrainer
from .models.kgcoop import KgCoOpCLIP
from .options import kgcoop_template


@TRAINER_REGISTRY.register()
class KgCoOp(PromptTrainer):
    """Knowledge-guided Context Optimization (Yao et al., CVPR 2023)."""

    cfg_key = "KGCOOP"

    hand_written_template = staticmethod(kgcoop_template)  # fails early: check_cfg runs it (options.py)

    def build_prompt_model(self, classnames, clip_model):
        c = self.trainer_cfg
        clip_model.to(self.device)  # the frozen text features are computed once, on this device
        return KgCoOpCLIP(classnames, clip_model, template=self.hand_written_template(self.cfg), n_ctx=c.N_CTX,
                          ctx_init=c.CTX_INIT, csc=c.CSC)

    def regularization_terms(self, images, image_features, text_features, classes=None):
        """W * (1 - mean cos(prompted, frozen CLIP text features)); DPC stage 2 adds it to L_CL (paper Sec. 3.3).
        ``classes``: the classes ``text_features`` holds (DPC.TEXT_CLASSES pairs: the mean over them), else all."""
        return {"kg": self.trainer_cfg.W * self.model.knowledge_guided_distance(text_features, classes)}
