"""DePT versions of our backbones: each is the backbone trainer plus ``DePTMixin``.

DePT's code (github Koorye/DePT) ships CoOp, CoCoOp, KgCoOp and MaPLe with DePT (``ExtrasLinearProbe<Backbone>``);
PromptSRC with DePT is ours, the same head on PromptSRC's published recipe (docs/dept.md).
"""
from dassl.engine import TRAINER_REGISTRY

from .cocoop import CoCoOp
from .coop import CoOp
from .dept import DePTMixin
from .kgcoop import KgCoOp
from .maple import MaPLe
from .promptsrc import PromptSRC


@TRAINER_REGISTRY.register()
class DePT_CoOp(DePTMixin, CoOp):
    """CoOp's text context and the CAT head on CLIP's frozen image features."""


@TRAINER_REGISTRY.register()
class DePT_CoCoOp(DePTMixin, CoCoOp):
    """The head reads each image's own conditioned text features of its class."""


@TRAINER_REGISTRY.register()
class DePT_KgCoOp(DePTMixin, KgCoOp):
    """KgCoOp's knowledge-guided term is added to DePT's loss at its own weight, as DePT's code does."""


@TRAINER_REGISTRY.register()
class DePT_MaPLe(DePTMixin, MaPLe):
    """MaPLe's coupled prompts and the CAT head on the prompted features of both towers."""


@TRAINER_REGISTRY.register()
class DePT_PromptSRC(DePTMixin, PromptSRC):
    """PromptSRC's L_SCL is added to DePT's loss at its own weights; GPA averages the head with the prompts."""
