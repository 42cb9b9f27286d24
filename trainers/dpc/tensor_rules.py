"""Which duals w_b and w_n act on: a per-trainer declaration, with "every dual" as the option.

The releases do not treat every learnable tensor alike. The CoOp release decouples its one tensor, the
context. The PromptKD release decouples only the text context of its copy of the teacher's text prompt
(gradient x 1/w_b); the student's vision prompts, the copy's deep text prompts and the projector train as
plain parameters from their stage-1 values, and new classes are evaluated with stage 1's projector and
batch-norm statistics, only the vision prompts mixed with w_n.

A DPC trainer declares its rule with two class attributes, fnmatch patterns of dual names (relative to
each registered model, like ``dpc_prompt_names``):

    dpc_w_base_names   the duals w_b acts on (gradient x 1/w_b, the frozen rule, the mixed base prompt);
                       the others train as plain parameters from stage 1 (as with w_b = 1)
    dpc_w_new_names    the duals mixed with w_n for new classes; the others give their stage-1 value

``None`` (the mixin's default) means every dual. ``DPC.W_BASE_TENSORS`` / ``DPC.W_NEW_TENSORS``: ``auto``
(the declaration) or ``all`` (every dual, whatever is declared).
"""
from __future__ import annotations

import fnmatch
from typing import Dict, List, Optional, Sequence, Tuple

from .errors import ConfigError

CHOICES = ("auto", "all")
Names = Dict[str, List[str]]  # registered model -> names of its duals


def _matching(names: Sequence[str], patterns: Sequence[str]) -> List[str]:
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def select(prompts: Names, patterns: Optional[Sequence[str]], option: str, owner: str, attribute: str,
           key: str) -> Names:
    """The duals of each registered model a rule applies to. ``owner.attribute`` holds the declared
    ``patterns``; ``DPC.<key>`` is ``option``. A declared pattern that matches no dual is an error."""
    if option not in CHOICES:
        raise ConfigError(f"DPC.{key} must be one of {CHOICES}, got {option!r}")
    if option == "all" or patterns is None:
        return {model: list(names) for model, names in prompts.items()}
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    every = [n for names in prompts.values() for n in names]
    unmatched = [p for p in patterns if not _matching(every, [p])]
    if unmatched:
        raise ConfigError(f"{owner}.{attribute} has patterns that match no tensor with a dual: {unmatched} "
                         f"(the duals: {every}); fix the patterns, or set DPC.{key} all")
    return {model: _matching(names, patterns) for model, names in prompts.items()}


def describe(prompts: Names, chosen: Names) -> Tuple[str, str]:
    """(the chosen duals, the others) as short text for the log."""
    def listed(pick):
        names = [n for model in prompts for n in prompts[model] if pick(model, n)]
        return ", ".join(names) if names else "none"
    inside = listed(lambda model, n: n in chosen.get(model, ()))
    outside = listed(lambda model, n: n not in chosen.get(model, ()))
    return inside, outside


def report(prompts: Names, weighted: Names, mixed_new: Names, owner: str, options: Tuple[str, str]) -> str:
    """The log lines that say which duals w_b and w_n act on, and why (the trainer's rule or the option)."""
    total = sum(len(v) for v in prompts.values())
    lines = []
    for what, chosen, option, rest in (
            ("w_b acts on (gradient x 1/w_b)", weighted, options[0], "train as plain parameters from stage 1 (x1)"),
            ("new classes mix with w_n", mixed_new, options[1], "give their stage-1 value on new classes")):
        inside, outside = describe(prompts, chosen)
        count = sum(len(v) for v in chosen.values())
        source = "every dual" if count == total else f"{count} of {total} duals, {owner}'s rule"
        line = f"DPC: {what}: {inside if count < total else 'all ' + str(total)} ({source}; {option})"
        if count < total:
            line += f"; the others {rest}: {outside}"
        lines.append(line)
    return "\n".join(lines)
