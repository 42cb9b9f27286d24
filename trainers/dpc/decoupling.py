"""Weighting-Decoupling: every learnable prompt tensor gets a frozen stage-1 copy ``P`` and a trainable dual.

The trainable tensor ``M`` starts at ``P``; how it maps to the parallel prompt ``P'`` is the update rule
(``DPC.UPDATE``):

    release  P' = M, and the gradient reaching M is multiplied by 1 / w_b.
             What the authors' code executes and what produced the paper's numbers: their "frozen" P
             shares storage with the trained tensor, so their inverse mix (theta - (1 - w_b) P) / w_b
             is theta itself and only the 1 / w_b factor on the gradient survives. Weight decay and
             momentum act on P' directly; w_b works as a learning-rate multiplier on the gradient.
    frozen   P' = P + (M - P) / w_b with P truly frozen (the paper's equations taken literally).
             One SGD step of lr on M then moves P' by lr / w_b**2 times its gradient (x25 at w_b = 0.2).

The prompt a backbone sees depends on the mode:

    stage1  P                                (the frozen stage-1 model, used to score negatives)
    train   P'
    base    P'                               (DPC.BASE_PROMPT parallel, default; the release)
            w_b P' + (1 - w_b) P             (DPC.BASE_PROMPT mixed, the paper's Fig. 4 literally)
    new     w_n P' + (1 - w_n) P

``M = P`` reproduces the stage-1 tensor bit for bit in every mode, and ``w_n = 0`` gives exactly ``P``.

Two per-tensor choices (``attach``'s ``weighted`` and ``mixed_new``; the mixin reads them off the trainer,
``trainers/dpc/tensor_rules.py``), because the releases do not treat every learnable tensor alike:

    weighted   w_b acts on the tensor (gradient x 1/w_b, the frozen rule, the mixed base prompt). A tensor
               that is not weighted is trained as a plain parameter from its stage-1 value: it behaves as
               with w_b = 1 (the PromptKD release trains the student this way; only its text context is
               decoupled).
    mixed_new  new classes use w_n P' + (1 - w_n) P; a tensor that is not mixed gives P exactly in ``new``
               mode (the PromptKD release evaluates new classes with stage 1's projector).

Batch-norm running statistics are not learned but change in training (PromptKD's projector has them):
``attach_statistics`` keeps a stage-1 copy next to each such layer (``DualStatistics``). In ``stage1`` and
``new`` modes the layer normalises with the stage-1 statistics, as the stage-1 model is evaluated, and
changes nothing; in ``train`` and ``base`` it is the layer as trained in stage 2.

The mechanism is ``torch.nn.utils.parametrize``: the backbone keeps reading ``self.ctx`` (or any
other prompt attribute) and transparently gets the prompt of the current mode. In a state dict
a wrapped tensor ``ctx`` appears as ``parametrizations.ctx.original`` (``M``) plus the buffer
``parametrizations.ctx.0.stage1`` (``P``) and ``parametrizations.ctx.0._extra_state`` (w_b of
training, the update rule and whether w_b acts on the tensor, as a small float64 tensor
``[w_b, rule index in UPDATES, weighted]`` so that code doing arithmetic on whole state dicts, such as
upstream PromptSRC's weight averaging, works; checkpoints without the third entry were weighted).
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, List, Sequence

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from .config import BASE_PROMPTS, UPDATES, check_choice, check_weights
from .errors import ConfigError

MODES = ("stage1", "train", "base", "new")


def scale_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` unchanged (bit for bit), with its gradient multiplied by ``factor``."""
    if factor == 1.0:
        return x
    frozen = x.detach()
    return frozen + (x - frozen) * factor


class DualPrompt(nn.Module):
    """Parametrization mapping the trainable tensor ``M`` to the prompt of the current mode."""

    def __init__(self, stage1: torch.Tensor, w_train: float, w_base: float | None = None,
                 w_new: float = 1e-6, base_prompt: str = "parallel", update: str = "release",
                 weighted: bool = True, mixed_new: bool = True):
        super().__init__()
        check_weights(w_train, w_new)
        check_choice("BASE_PROMPT", base_prompt, BASE_PROMPTS)
        check_choice("UPDATE", update, UPDATES)
        self.register_buffer("stage1", stage1.detach().clone())
        self.weighted = bool(weighted)  # saved as extra state, with w_train and the rule
        self.w_train = float(w_train) if weighted else 1.0  # a Python float needs no device sync
        self.update = update  # a checkpoint is read with the rule it was trained with
        self.mixed_new = bool(mixed_new)
        self.mode = "train"
        self.w_base = float(w_train if w_base is None else w_base)
        self.w_new = float(w_new)
        self.base_prompt = base_prompt

    def coefficient(self) -> float:
        """How much of P' the current mode mixes into P."""
        if self.mode == "stage1":
            return 0.0
        if self.mode == "new":
            return self.w_new if self.mixed_new else 0.0
        if self.mode == "base" and self.base_prompt == "mixed" and self.weighted:
            return self.w_base
        return 1.0  # train, and base with the parallel prompt (or a tensor w_b does not act on)

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        c = self.coefficient()
        p = self.stage1
        if c == 0.0:
            return p
        if self.update == "frozen" and self.weighted:  # unweighted: P' = M under both rules
            return p + (m - p) * (c / self.w_train)
        if self.mode == "train":
            return scale_gradient(m, 1.0 / self.w_train)
        if c == 1.0:
            return m
        return p + (m - p) * c  # c P' + (1 - c) P, written so that P' = P gives P exactly

    def right_inverse(self, prompt: torch.Tensor) -> torch.Tensor:
        """The M that yields ``prompt`` as the parallel prompt (P itself maps to M = P)."""
        p = self.stage1
        prompt = prompt.detach().to(p.dtype)
        if self.update == "frozen" and self.weighted:
            return p + (prompt - p) * self.w_train
        return prompt.clone()

    def get_extra_state(self):
        return torch.tensor([self.w_train, UPDATES.index(self.update), float(self.weighted)], dtype=torch.float64)

    def set_extra_state(self, state):
        if isinstance(state, dict):  # checkpoints written before the tensor form
            self.w_train = float(state["w_train"])
            self.update = state.get("update", "frozen")  # ... and before the release rule
            self.weighted = True
            return
        w_train, rule, *weighted = state.tolist()  # no third entry: written when every dual was weighted
        self.w_train, self.update = float(w_train), UPDATES[round(rule)]
        self.weighted = bool(round(weighted[0])) if weighted else True

    def extra_repr(self) -> str:
        return (f"shape={tuple(self.stage1.shape)}, mode={self.mode}, update={self.update}, "
                f"w_train={self.w_train:g}, w_base={self.w_base:g}, w_new={self.w_new:g}, "
                f"base_prompt={self.base_prompt}, weighted={self.weighted}, mixed_new={self.mixed_new}")


STATISTICS = "dpc_stage1_statistics"  # the attribute of a batch-norm layer holding its DualStatistics


class DualStatistics(nn.Module):
    """Stage-1 running statistics of one batch-norm layer, and the mode that decides whether they are used."""

    def __init__(self, norm: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.register_buffer("running_mean", norm.running_mean.detach().clone())
        self.register_buffer("running_var", norm.running_var.detach().clone())
        self.mode = "train"
        self._saved = None
        norm.register_forward_pre_hook(self._swap_in)
        norm.register_forward_hook(self._swap_out, always_call=True)

    def _swap_in(self, norm, args):
        if self.mode in ("stage1", "new"):
            self._saved = (norm.training, norm.running_mean, norm.running_var)
            norm.training, norm.running_mean, norm.running_var = False, self.running_mean, self.running_var

    def _swap_out(self, norm, args, output):
        if self._saved is not None:
            norm.training, norm.running_mean, norm.running_var = self._saved
            self._saved = None

    def extra_repr(self) -> str:
        return f"features={self.running_mean.numel()}, mode={self.mode}"


def attach_statistics(root: nn.Module) -> List[str]:
    """Give every batch-norm layer of ``root`` that tracks running statistics a stage-1 copy of them (its
    current ones); returns the layers' names."""
    names = []
    for name, module in list(root.named_modules()):
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            if any(isinstance(child, DualStatistics) for child in module.children()):
                raise ValueError(f"{name} already has stage-1 statistics")
            setattr(module, STATISTICS, DualStatistics(module))
            names.append(name)
    return names


def _owner(root: nn.Module, dotted: str):
    *path, attr = dotted.split(".")
    module = root
    for part in path:
        module = getattr(module, part)
    return module, attr


def attach(root: nn.Module, names: Sequence[str], w_train: float, w_base: float | None = None,
           w_new: float = 1e-6, base_prompt: str = "parallel", update: str = "release",
           weighted: Iterable[str] | None = None, mixed_new: Iterable[str] | None = None) -> List[str]:
    """Give each named parameter of ``root`` its dual; its current value becomes the frozen P.

    ``weighted``: the names w_b acts on; ``mixed_new``: the names mixed with w_n for new classes
    (None: every name, for both)."""
    check_choice("BASE_PROMPT", base_prompt, BASE_PROMPTS)
    check_choice("UPDATE", update, UPDATES)
    if not names:
        raise ConfigError("DPC found no learnable prompt tensor to wrap; list them in the trainer's "
                         "`dpc_prompt_names` or make sure the backbone leaves its prompts trainable")
    weighted = set(names if weighted is None else weighted)
    mixed_new = set(names if mixed_new is None else mixed_new)
    for name in names:
        module, attr = _owner(root, name)
        if parametrize.is_parametrized(module, attr):
            raise ValueError(f"{name} already has a dual prompt")
        value = getattr(module, attr)
        parametrize.register_parametrization(
            module, attr, DualPrompt(value, w_train, w_base, w_new, base_prompt, update,
                                     weighted=name in weighted, mixed_new=name in mixed_new))
    return list(names)


def dual_prompts(root: nn.Module) -> Iterator[DualPrompt]:
    return (m for m in root.modules() if isinstance(m, DualPrompt))


def _duals(root: nn.Module) -> Iterator[nn.Module]:
    """Everything that follows the mode: dual prompts and stage-1 statistics."""
    return (m for m in root.modules() if isinstance(m, (DualPrompt, DualStatistics)))


class Modes:
    """The duals of ``root`` (dual prompts and stage-1 statistics), listed once: a trainer switches modes every
    step (stage 1 scores the negatives) without walking the whole model each time."""

    def __init__(self, root: nn.Module):
        self.duals = list(_duals(root))
        if not self.duals:
            raise ValueError("model has no dual prompts; call trainers.dpc.decoupling.attach first")

    def set(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"dual-prompt mode must be one of {MODES}, got {mode!r}")
        for dual in self.duals:
            dual.mode = mode

    def get(self) -> str:
        modes = {dual.mode for dual in self.duals}
        if len(modes) != 1:
            raise ValueError(f"dual prompts are in mixed modes: {sorted(modes)}")
        return modes.pop()

    @contextlib.contextmanager
    def switched(self, name: str):
        """Every dual in mode ``name`` during the block."""
        previous = self.get()
        self.set(name)
        try:
            yield
        finally:
            self.set(previous)


def set_mode(root: nn.Module, mode: str) -> None:
    Modes(root).set(mode)


def get_mode(root: nn.Module) -> str:
    return Modes(root).get()


def mode(root: nn.Module, name: str):
    """Temporarily switch every dual prompt of ``root`` to mode ``name`` (a context manager)."""
    return Modes(root).switched(name)


def set_weights(root: nn.Module, w_base: float | None = None, w_new: float | None = None) -> None:
    """Change the inference weights (no retraining needed; w_train stays as trained)."""
    for dual in dual_prompts(root):
        check_weights(dual.w_base if w_base is None else w_base, dual.w_new if w_new is None else w_new)
        if w_base is not None:
            dual.w_base = float(w_base)
        if w_new is not None:
            dual.w_new = float(w_new)


def state_keys(root: nn.Module) -> List[str]:
    """State-dict keys of the dual prompts (M, P, w_b), any other trainable tensor of ``root``, and the
    running statistics (stage-1 and trained) of layers with ``DualStatistics``."""
    keys = [k for k in root.state_dict() if k.startswith("parametrizations.") or ".parametrizations." in k]
    for name, module in root.named_modules():
        if isinstance(module, DualStatistics):
            norm = name[:-len(STATISTICS)]  # "<layer>." (or "" for a root layer)
            keys += [f"{name}.running_mean", f"{name}.running_var", f"{norm}running_mean", f"{norm}running_var",
                     f"{norm}num_batches_tracked"]
    return keys + trainable_names(root)


def trainable_names(root: nn.Module, patterns: Iterable[str] | None = None) -> List[str]:
    """Names of the trainable parameters of ``root`` (optionally filtered by fnmatch patterns)."""
    import fnmatch

    names = [n for n, p in root.named_parameters() if p.requires_grad and ".parametrizations." not in f".{n}"]
    if patterns is not None:
        patterns = list(patterns)
        names = [n for n in names if any(fnmatch.fnmatchcase(n, pat) for pat in patterns)]
    return names
