"""One training step's backward and update for a plug-in trainer (DPC, DePT), with or without PREC amp.

Shared by both plug-ins: it reads only Dassl's registered models and the backbone trainer's ``scaler``
(trainers/base.py: a ``torch.amp.GradScaler`` under amp, else None).
"""
import torch


def autocast(trainer, device_type: str):
    """The forward's context: autocast under PREC amp (the trainer has a grad scaler), else nothing changes."""
    return torch.autocast(device_type, enabled=getattr(trainer, "scaler", None) is not None)


def backward_and_update(trainer, loss) -> None:
    """Dassl's ``model_backward_and_update(loss)``; under amp the same with the loss scaled: every registered
    optimizer's gradients zeroed, the scaled loss backpropagated, each optimizer stepped through the scaler
    (which skips a step with inf / NaN gradients), then the scale updated once."""
    scaler = getattr(trainer, "scaler", None)
    if scaler is None:
        trainer.model_backward_and_update(loss)
        return
    trainer.model_zero_grad()
    scaler.scale(loss).backward()
    for name in trainer.get_model_names():
        if trainer._optims[name] is not None:
            scaler.step(trainer._optims[name])
    scaler.update()
