"""The backbone's own loss terms in stage 2 (paper Sec. 3.3: L_CL "in parallel" with them), and what DPC says
when it cannot see them.

DPC replaces the backbone's training step by its own, so it adds the backbone's terms only where they are
declared: the backbone trainer's ``regularization_terms(images, image_features, text_features)`` or the DPC
trainer's ``dpc_extra_loss``. A forked backbone that computes its extra terms inside its own
``forward_backward`` (upstream PromptSRC's L_SCL, upstream KgCoOp's W * (1 - cos)) hides them: their weights
and inputs are local to that method, so nothing can be recovered safely without the user. ``missing_terms_note``
then says so once, at the start of stage 2, with the method to add.

A backbone trainer whose ``forward_backward`` adds exactly its ``regularization_terms`` (or nothing) to its
classification loss says so with the class attribute ``dpc_terms_declared = True`` (our ``PromptTrainer``).
"""
from __future__ import annotations

from typing import Optional

METHOD = """\
    class DPC_{name}(DPCMixin, {name}):
        def regularization_terms(self, images, image_features, text_features):
            # the anchors, their features and all base classes' text features under P' (what L_CL uses)
            term = ...  # what {name}.forward_backward adds to its cross-entropy, from these tensors
            return {{"my_term": weight * term}}  # added to L_CL in stage 2 and logged by name"""


def missing_terms_note(trainer, mixin: type) -> Optional[str]:
    """The note for a DPC trainer whose backbone may add loss terms DPC cannot see, or None."""
    if not trainer.cfg.DPC.PARALLEL_LOSS or type(trainer).dpc_extra_loss is not mixin.dpc_extra_loss:
        return None
    if getattr(trainer, "regularization_terms", None) is not None or getattr(trainer, "dpc_terms_declared", False):
        return None
    name = trainer.dpc_backbone_name()
    return (f"DPC: {name} trains with its own forward_backward and has no `regularization_terms`, so DPC cannot "
            f"see the loss terms it adds to its cross-entropy: stage 2 trains on L_CL alone (DPC.PARALLEL_LOSS "
            f"adds nothing). If {name}'s loss has other terms (e.g. PromptSRC's L_SCL, KgCoOp's W * (1 - cos)), "
            f"give its DPC trainer the method (README, 'Using DPC in your own CoOp-family repository'):\n"
            f"{METHOD.format(name=name)}\n"
            "DPC.PARALLEL_LOSS False trains on L_CL alone without this note.")
