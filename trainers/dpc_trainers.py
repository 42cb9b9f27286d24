"""DPC versions of our backbones: each is the backbone trainer plus ``DPCMixin``."""
from dassl.engine import TRAINER_REGISTRY

from .coop import CoOp
from .dpc import DPCMixin


@TRAINER_REGISTRY.register()
class DPC_CoOp(DPCMixin, CoOp):
    dpc_frozen_image_encoder = True  # CoOp prompts only the text side
