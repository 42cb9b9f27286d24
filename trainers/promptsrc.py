"""Dassl trainer for PromptSRC: cross-entropy plus self-regulating terms, and GPA over epochs."""

from dassl.engine import TRAINER_REGISTRY

from .base import PromptTrainer
from .dpc.checkpoint import load_checkpoint
from .dpc.files import resume_path
from .gpa import PromptAggregate
from .models.promptsrc import PromptSRCCLIP, self_regulating_losses
from .options import gaussian_epoch_weights
from .dpc.errors import ConfigError


@TRAINER_REGISTRY.register()
class PromptSRC(PromptTrainer):
    """Prompting with Self-regulating Constraints (Khattak et al., ICCV 2023)."""

    cfg_key = "PROMPTSRC"

    def build_prompt_model(self, classnames, clip_model):
        c = self.trainer_cfg
        clip_model.to(self.device)  # the frozen template features are computed once, on this device
        return PromptSRCCLIP(classnames, clip_model, n_ctx_text=c.N_CTX_TEXT, n_ctx_vision=c.N_CTX_VISION,
                             ctx_init=c.CTX_INIT, depth_text=c.PROMPT_DEPTH_TEXT, depth_vision=c.PROMPT_DEPTH_VISION)

    def build_model(self):
        super().build_model()
        c = self.trainer_cfg
        self.gpa = PromptAggregate(gaussian_epoch_weights(self.cfg.OPTIM.MAX_EPOCH, c.GPA_MEAN, c.GPA_STD))

    def regularization_terms(self, images, image_features, text_features, classes=None):
        """L_SCL from given prompted features; DPC stage 2 adds these to L_CL (paper Sec. 3.3). ``classes``: the
        classes ``text_features`` holds (DPC.TEXT_CLASSES pairs), else all."""
        c = self.trainer_cfg
        out = self.model.scl_outputs(images, image_features, text_features, classes)
        return self_regulating_losses(out, c.TEXT_LOSS_WEIGHT, c.IMAGE_LOSS_WEIGHT)

    # ---------------------------------------------------------------- GPA
    def after_epoch(self):
        self.gpa.update(self._models, self.epoch)
        if self.epoch + 1 == self.max_epoch:
            print("GPA: using the Gaussian-weighted aggregate of all epochs as the final model")
            self.gpa.load_into(self._models)
        super().after_epoch()  # saves the checkpoint (with the aggregate so far)

    def checkpoint_extras(self) -> dict:
        extras = super().checkpoint_extras()
        extras["gpa"] = self.gpa.state_dict()
        return extras

    def resume_model_if_exist(self, directory):
        start_epoch = super().resume_model_if_exist(directory)
        if start_epoch > 0:
            path = resume_path(directory, self.get_model_names()[0])
            state = load_checkpoint(path).get("gpa")
            if state is None:
                raise ConfigError(f"{path} has no GPA record: it was not written by a {type(self).__name__} run, "
                                 "so training cannot resume from it; use a fresh output directory")
            self.gpa.load_state_dict(state)
            if self.gpa.epochs != list(range(start_epoch)):
                raise ConfigError(f"{path} (epoch {start_epoch}) holds GPA epochs "
                                 f"{[e + 1 for e in self.gpa.epochs]}, expected 1..{start_epoch}")
            print(f"GPA: restored the aggregate of epochs 1..{start_epoch}")
        return start_epoch
