"""Context managers of the epoch-end replay: the backbone's own ``forward_backward`` runs once more on each
epoch's last batch with its optimizer steps off, for what it does at epoch end (``DPCMixin._dpc_end_of_epoch``)."""
from __future__ import annotations

import contextlib

import torch

from .features import replaced


ONLY_UPDATES_LR = "dpc_epoch_end_only_update_lr"


def only_updates_lr(forward_backward):
    """Decorator: this ``forward_backward`` does nothing at an epoch's end but ``self.update_lr()`` (no state it
    keeps, no random draws beyond the step itself), so DPC calls ``update_lr`` instead of replaying it. A subclass
    that overrides ``forward_backward`` is replayed again unless it declares the same."""
    setattr(forward_backward, ONLY_UPDATES_LR, True)
    return forward_backward


def replay_needed(forward_backward) -> bool:
    """Whether a backbone's (bound) ``forward_backward`` must be replayed at epoch end to do its epoch-end work."""
    return not getattr(forward_backward, ONLY_UPDATES_LR, False)


def unique(objects):
    """The distinct non-None objects, in order."""
    return list({id(o): o for o in objects if o is not None}.values())


@contextlib.contextmanager
def counted(obj, method: str, calls: list):
    """Calls of ``obj.method`` during the block are appended to ``calls`` (and made as usual)."""
    call = getattr(obj, method)

    def counting(*args, **kwargs):
        calls.append(method)
        return call(*args, **kwargs)

    with replaced(obj, method, counting):
        yield


@contextlib.contextmanager
def disabled(obj, *methods: str):
    """The named methods of ``obj`` do nothing during the block."""
    with contextlib.ExitStack() as stack:
        for method in methods:
            stack.enter_context(replaced(obj, method, lambda *a, **k: None))
        yield


@contextlib.contextmanager
def norm_statistics_kept(model):
    """Batch-norm layers of ``model`` normalise with their running statistics and leave them unchanged in the block."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training]
    for norm in norms:
        norm.train(False)
    try:
        yield
    finally:
        for norm in norms:
            norm.train(True)


@contextlib.contextmanager
def trained_tensors_only(model, blocked: dict):
    """``model.load_state_dict`` changes only trainable parameters during the block; the largest change
    refused for each other tensor is recorded in ``blocked``."""
    load = model.load_state_dict
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}

    def load_trained_only(state_dict, *args, **kwargs):
        own = model.state_dict()
        kept = dict(state_dict)
        for key, value in state_dict.items():
            if key in own and key not in trainable:
                if torch.is_tensor(value) and torch.is_tensor(own[key]) and value.shape == own[key].shape:
                    change = (value.to(own[key].device).double() - own[key].double()).abs().max().item()
                    if change > 0:
                        blocked[key] = max(change, blocked.get(key, 0.0))
                kept[key] = own[key]
        return load(kept, *args, **kwargs)

    with replaced(model, "load_state_dict", load_trained_only):
        yield
