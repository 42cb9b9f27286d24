"""DPC versions of our backbones: each is the backbone trainer plus ``DPCMixin``."""
from dassl.engine import TRAINER_REGISTRY

from .cocoop import CoCoOp
from .coop import CoOp
from .dpc import DPCMixin
from .ivlp import IVLP
from .kgcoop import KgCoOp
from .maple import MaPLe
from .promptsrc import PromptSRC


@TRAINER_REGISTRY.register()
class DPC_CoOp(DPCMixin, CoOp):
    """The context gets a dual; CoOp's image features are frozen, so the anchors' are reused."""


@TRAINER_REGISTRY.register()
class DPC_MaPLe(DPCMixin, MaPLe):
    """Every MaPLe tensor (text prompts and coupling layers) gets a dual."""


@TRAINER_REGISTRY.register()
class DPC_PromptSRC(DPCMixin, PromptSRC):
    """Vision and text prompts get duals; GPA keeps averaging the trainable duals M."""


@TRAINER_REGISTRY.register()
class DPC_CoCoOp(DPCMixin, CoCoOp):
    """Context and Meta-Net get duals; text features are per image (conditioned on each pair's image)."""


@TRAINER_REGISTRY.register()
class DPC_KgCoOp(DPCMixin, KgCoOp):
    """The context gets a dual; the knowledge-guided term is added to L_CL in parallel."""


@TRAINER_REGISTRY.register()
class DPC_IVLP(DPCMixin, IVLP):
    """Text and vision prompts (input and deep) get duals."""
