"""DPC versions of our backbones: each is the backbone trainer plus ``DPCMixin``."""
import torch.nn.functional as F
from dassl.engine import TRAINER_REGISTRY

from .base import PromptTrainer
from .cocoop import CoCoOp
from .coop import CoOp
from .dpc import DPCMixin
from .ivlp import IVLP
from .kgcoop import KgCoOp
from .maple import MaPLe
from .models.promptkd import TextPromptCopy
from .promptkd import PromptKD
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


@TRAINER_REGISTRY.register()
class DPC_PromptKD(DPCMixin, PromptKD):
    """The student's vision prompts and projector get duals, and so does ``dpc_text``, a learnable copy of the
    teacher's text prompts read through the teacher's own text tower: the text side L_CL needs and the
    student lacks. Negatives are ranked by the teacher (TRAINER.PROMPTKD.DPC_SCORER teacher, as the release)
    or by stage-1 PromptKD (student). Base classes are scored against ``dpc_text``, new classes against the
    teacher's text features, as PromptKD and the release do. With DPC.PARALLEL_LOSS the distillation term on
    the anchors is added to L_CL. Stage 2 trains on the loaded few-shot base images (TRAIN_IMAGES unused).

    As the release (trainers/sple_promptkd.py) runs it: w_b acts on the copy's text context alone (the one
    tensor its decoupling reads), every other dual trains as a plain parameter from stage 1; new classes use
    stage 1's projector and batch-norm statistics, the vision prompts mixed with w_n (the text copy is not read
    for new classes); negative images go through the test transform. DPC.W_BASE_TENSORS / W_NEW_TENSORS all
    and DPC.NEG_TRANSFORM train are the options."""

    dpc_w_base_names = ("dpc_text.ctx",)
    dpc_w_new_names = ("vision_ctx", "deep_vision.*")
    dpc_negative_transform = "test"
    dpc_terms_need_all_classes = False  # the distillation term reads the teacher's stored text features

    def build_data_loader(self):
        PromptTrainer.build_data_loader(self)  # Dassl's loaders: the few-shot base classes, not PromptKD's set

    def build_prompt_model(self, classnames, clip_model):
        model = super().build_prompt_model(classnames, clip_model)
        model.prompt_learner.dpc_text = TextPromptCopy(self.teacher.prompt_learner)
        return model

    def saved_keys(self, name, module):
        if self.dpc_loading == "stage1":  # a PromptKD checkpoint: the text copy starts from the teacher instead
            return [k for k in module.state_dict() if not k.startswith("dpc_text.")]
        return None

    def set_model_mode(self, mode="train", names=None):
        super().set_model_mode(mode, names)
        self.dpc_eval_text = None

    def before_train(self):
        super().before_train()
        scorer = "the teacher (as the release)" if self.trainer_cfg.DPC_SCORER == "teacher" else "stage-1 PromptKD"
        print(f"DPC: hard negatives ranked by {scorer}; L_CL on the student's features and a copy of the teacher's "
              f"text prompts; PromptKD's distillation term {'added' if self.cfg.DPC.PARALLEL_LOSS else 'off'}")

    def dpc_text_features(self, classes=None):
        """Normalised text features of the trained classes (or of ``classes`` among them) under the current mode's
        text prompts."""
        if self.dpc_modes.get() == "stage1":  # the teacher's prompts: its features, computed once
            return self.model.text_features if classes is None else self.model.text_features[classes]
        rows = self.class_rows if classes is None else [self.class_rows[i] for i in classes.tolist()]
        return F.normalize(self.model.prompt_learner.dpc_text.features(self.teacher, rows), dim=-1)

    def dpc_features(self, images, classes=None):
        return self.model.encode_image(images), self.dpc_text_features(classes)

    def dpc_scoring_features(self, images):
        if self.trainer_cfg.DPC_SCORER == "student":
            return super().dpc_scoring_features(images)
        self.dpc_teacher_anchors = (images, self.teacher_image_features(images))
        return self.dpc_teacher_anchors[1], self.model.text_features

    def dpc_extra_loss(self, images, labels, image_features, text_features):
        if not self.cfg.DPC.PARALLEL_LOSS:
            return None
        cached = getattr(self, "dpc_teacher_anchors", None)
        teacher = cached[1] if cached is not None and cached[0] is images else None
        return {"kd": self.distill(images, image_features, self.model.text_features, teacher)[0]}

    def model_inference(self, images):
        if self.dpc_modes.get() in ("stage1", "new"):
            return self.model(images)  # the teacher's text features of the evaluated classes
        if self.dpc_eval_text is None:
            self.dpc_eval_text = self.dpc_text_features()
        return self.model.logits(self.model.encode_image(images), self.dpc_eval_text)
