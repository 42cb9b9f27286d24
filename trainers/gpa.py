"""Gaussian-weighted prompt aggregation (GPA, from PromptSRC), independent of Dassl.

After epoch e (1-based) the trainable parameters are added to a running sum with weight
``g(e) / sum_k g(k)``, g being the N(GPA_MEAN, GPA_STD) density over epochs 1..MAX_EPOCH; after the
last epoch the sum replaces the parameters, so the saved and evaluated model is the aggregate.

Only parameters with ``requires_grad`` are aggregated (frozen CLIP weights and DPC's frozen
stage-1 buffers are untouched). Under DPC the trainable tensor is the dual M; the prompt is affine in
M and the weights sum to 1, so averaging M averages the parallel prompt P'. The running sum is
kept in fp32 and can be saved and restored, so a resumed run ends with the same aggregate.
"""
from __future__ import annotations

import math
from typing import Dict, Iterator, List, Mapping, Sequence, Tuple

import torch
import torch.nn as nn

from .dpc.errors import ConfigError


def trainable_parameters(module: nn.Module) -> Iterator[Tuple[str, nn.Parameter]]:
    return ((name, p) for name, p in module.named_parameters() if p.requires_grad)


class PromptAggregate:
    """Running weighted sum of the trainable parameters of named modules (e.g. Dassl's ``_models``)."""

    def __init__(self, weights: Sequence[float]):
        self.weights = [float(w) for w in weights]
        self.epochs: List[int] = []  # 0-based epochs already added
        self.sums: Dict[str, Dict[str, torch.Tensor]] = {}

    def update(self, modules: Mapping[str, nn.Module], epoch: int) -> None:
        """Add the parameters after 0-based ``epoch`` with that epoch's weight."""
        if epoch in self.epochs:
            raise ValueError(f"GPA already holds epoch {epoch + 1}")
        if not 0 <= epoch < len(self.weights):
            raise ValueError(f"epoch {epoch + 1} is outside the {len(self.weights)} GPA epochs")
        weight = self.weights[epoch]
        with torch.no_grad():
            for model_name, module in modules.items():
                sums = self.sums.setdefault(model_name, {})
                for name, p in trainable_parameters(module):
                    term = p.detach().float() * weight
                    sums[name] = term if name not in sums else sums[name].to(term.device) + term
        self.epochs.append(epoch)

    def load_into(self, modules: Mapping[str, nn.Module]) -> None:
        """Overwrite the trainable parameters with the aggregate."""
        with torch.no_grad():
            for model_name, module in modules.items():
                params = dict(trainable_parameters(module))
                sums = self.sums.get(model_name, {})
                if set(params) != set(sums):
                    raise ValueError(f"GPA aggregate of {model_name} holds {sorted(sums)}, "
                                     f"the model trains {sorted(params)}")
                for name, p in params.items():
                    p.copy_(sums[name])

    def state_dict(self) -> dict:
        return {"weights": list(self.weights), "epochs": list(self.epochs),
                "sums": {m: {n: t.detach().cpu().clone() for n, t in s.items()} for m, s in self.sums.items()}}

    def load_state_dict(self, state: dict) -> None:
        if len(state["weights"]) != len(self.weights) or any(
                not math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0) for a, b in zip(state["weights"], self.weights)):
            raise ConfigError("saved GPA weights differ from this run's (OPTIM.MAX_EPOCH, GPA_MEAN or GPA_STD changed)")
        self.epochs = list(state["epochs"])
        self.sums = {m: {n: t.clone() for n, t in s.items()} for m, s in state["sums"].items()}
