"""Dassl trainer for KgCoOp: cross-entropy plus the knowledge-guided term."""
from dassl.engine import TRAINER_REGISTRY

from .base import PromptTrainer
from .models.kgcoop import KgCoOpCLIP
from .templates import DATASET_TEMPLATES
from .dpc.errors import ConfigError


@TRAINER_REGISTRY.register()
class KgCoOp(PromptTrainer):
    """Knowledge-guided Context Optimization (Yao et al., CVPR 2023)."""

    cfg_key = "KGCOOP"

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        if cfg.TRAINER.KGCOOP.W < 0:
            raise ConfigError(f"TRAINER.KGCOOP.W must be >= 0, got {cfg.TRAINER.KGCOOP.W}")
        self.hand_written_template(cfg)  # fails before any data is read

    @staticmethod
    def hand_written_template(cfg) -> str:
        """TRAINER.KGCOOP.TEMPLATE, or (empty) the dataset's CoOp template, as upstream."""
        if cfg.TRAINER.KGCOOP.TEMPLATE:
            return cfg.TRAINER.KGCOOP.TEMPLATE
        name = cfg.DATASET.NAME
        if name not in DATASET_TEMPLATES:
            raise ConfigError(f"KgCoOp has no hand-written prompt for dataset {name!r} (known: "
                             f"{', '.join(sorted(DATASET_TEMPLATES))}): set TRAINER.KGCOOP.TEMPLATE, "
                             "e.g. \"a photo of a {}.\"")
        return DATASET_TEMPLATES[name]

    def build_prompt_model(self, classnames, clip_model):
        c = self.trainer_cfg
        clip_model.to(self.device)  # the frozen text features are computed once, on this device
        return KgCoOpCLIP(classnames, clip_model, template=self.hand_written_template(self.cfg), n_ctx=c.N_CTX,
                          ctx_init=c.CTX_INIT, csc=c.CSC)

    def regularization_terms(self, images, image_features, text_features):
        """W * (1 - mean cos(prompted, frozen CLIP text features)); DPC stage 2 adds it to L_CL (paper Sec. 3.3)."""
        return {"kg": self.trainer_cfg.W * self.model.knowledge_guided_distance(text_features)}
