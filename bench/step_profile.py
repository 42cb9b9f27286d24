"""Where a DPC stage-2 step spends its time, next to its backbone's step on the same pairs (torch.profiler, CPU).

``profile_steps(backbone, dpc, batches)`` draws the sampler's outputs for each batch (stage-1 scoring, real negative
images; profiled as DPC's sampler), then profiles, one step at a time and in alternating order, the DPC step with
those outputs and the backbone's step on the very same image-class pairs (anchors and negatives, the pairs'
labels), and prints (ms per step):
- phases: DPC's sampler, the forward of the pairs (their features), the loss (the pairs' concatenation, L_CL and
  any parallel terms), backward, the optimizer update (zero_grad and step); the backbone's forward with its loss
  (``compute_loss``), backward, update; the rest of ``forward_backward``; forward + loss and the step without the
  sampler compare like with like;
- modules: the forward of the image and text towers (the submodules DPC reads its features from) over every pass
  of the step (DPC: the stage-1 scoring of the anchors too), inclusive;
- operators: the heaviest by self CPU time (calls and ms per step on both sides), then the operators, by input
  shapes, whose calls differ: the work one side does and the other does not.
The calls are exact; the times of memory-bound operators (mul, sigmoid, copy_) vary between steps on a shared
machine far more than the compute-bound matrix products do, which is why each step gets its own profiler and the
order alternates.

    python bench/dpc_step.py --profile [--backbones MaPLe] [--steps 4]
"""
from __future__ import annotations

import collections
import contextlib

import torch
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from trainers.dpc.features import replaced

PREFIX = "dpc_bench/"
PHASES = {  # label: (DPC trainer method, backbone trainer method); None where the side has no such method
    "forward": ("_dpc_train_features", "compute_loss"),
    "loss": ("dpc_loss", None),  # DPC's whole loss; the sampler and forward are taken off below
    "backward": ("model_backward", "model_backward"),
    "update": ("model_update", "model_update"),
    "zero_grad": ("model_zero_grad", "model_zero_grad"),
    "step": ("forward_backward", "forward_backward"),
}


def drawn_pairs(dpc, batches):
    """For each batch: (the batch, what ``dpc.dpc_batch`` returns for it, the batch of its image-class pairs)."""
    out = []
    for batch in batches:
        images, labels = batch["img"].to(dpc.device), batch["label"].to(dpc.device)
        negatives, pair_labels, anchors = type(dpc).dpc_batch(dpc, images, labels)
        out.append((batch, (negatives, pair_labels, anchors),
                    {"img": torch.cat([images, negatives]), "label": pair_labels}))
    return out


@contextlib.contextmanager
def sampler_output(dpc, drawn):
    """DPC's steps in the block take ``drawn`` (an output of ``dpc_batch``) instead of sampling."""
    with replaced(dpc, "dpc_batch", lambda images, labels: drawn):
        yield


@contextlib.contextmanager
def labelled_methods(trainer, side: int):
    """The trainer's phase methods run under profiler labels during the block."""
    with contextlib.ExitStack() as stack:
        for label, methods in PHASES.items():
            method = methods[side]
            if method is None:
                continue
            call = getattr(trainer, method)

            def wrapped(*args, _call=call, _label=PREFIX + label, **kwargs):
                with record_function(_label):
                    return _call(*args, **kwargs)

            stack.enter_context(replaced(trainer, method, wrapped))
        yield


@contextlib.contextmanager
def labelled_modules(modules: dict):
    """The forward of each module (label: module) runs under a profiler label during the block."""
    handles, open_labels = [], []
    for label, module in modules.items():
        def enter(m, args, _label=PREFIX + label):
            open_labels.append(record_function(_label).__enter__())

        def leave(m, args, output):
            open_labels.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class Tally:
    """Labels' inclusive CPU time and operators' calls and self CPU time, summed over profiled steps."""

    def __init__(self):
        self.labels = collections.Counter()
        self.calls = {False: collections.Counter(), True: collections.Counter()}  # by name / by name and shapes
        self.ms = {False: collections.Counter(), True: collections.Counter()}

    def add(self, prof):
        for by_shapes in (False, True):
            for event in prof.key_averages(group_by_input_shape=by_shapes):
                if event.key.startswith(PREFIX):
                    if not by_shapes:
                        self.labels[event.key[len(PREFIX):]] += event.cpu_time_total / 1e3
                    continue
                key = (event.key, str(event.input_shapes)) if by_shapes else event.key
                self.calls[by_shapes][key] += event.count
                self.ms[by_shapes][key] += event.self_cpu_time_total / 1e3


def _profiled(tally, call):
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        out = call()
    tally.add(prof)
    return out


def _phases(labels, steps, dpc: bool):
    """Exclusive phases (ms per step) from the inclusive labels."""
    ms = collections.Counter({k: v / steps for k, v in labels.items()})
    forward = ms["forward"]
    loss = ms["loss"] - forward if dpc else 0.0  # the step's dpc_batch returns the drawn output at once
    rows = {"sampler": ms["sampler"] if dpc else None, "forward": forward, "loss": loss if dpc else None,
            "backward": ms["backward"], "update": ms["update"] + ms["zero_grad"]}
    rows["rest"] = ms["step"] - forward - loss - rows["backward"] - rows["update"]
    rows["forward + loss"] = forward + loss
    rows["total"] = ms["step"] + ms["sampler"]
    rows["total without sampler"] = ms["step"]
    rows["image tower (every pass)"] = ms["image tower"]  # DPC: the scoring pass's too
    rows["text tower (every pass)"] = ms["text tower"]
    return rows


def profile_steps(backbone, dpc, batches, top=12, differing=12):
    """Profile a DPC step and the backbone's step on the same pairs for each batch; print the tables and return
    the phases {trainer: {phase: ms per step}}."""
    name, dpc_name = type(backbone).__name__, type(dpc).__name__
    sites = dpc.dpc_capture.sites
    towers = {}
    for trainer in (backbone, dpc):
        trainer.set_model_mode("train")
        trainer.num_batches, trainer.batch_idx = 10 ** 9, 0
        modules = dict(getattr(trainer.model, "module", trainer.model).named_modules())
        towers[trainer] = {"image tower": modules[sites.image], "text tower": modules[sites.text]}
    tallies = {backbone: Tally(), dpc: Tally()}
    drawn = []
    for batch in batches:  # the sampler, profiled as DPC's
        with labelled_modules(towers[dpc]):
            drawn += _profiled(tallies[dpc], lambda: _labelled_draw(dpc, batch))
    for k, (batch, out, pairs) in enumerate(drawn):
        steps = [(dpc, 0, batch), (backbone, 1, pairs)]
        for trainer, side, step_batch in (steps if k % 2 == 0 else steps[::-1]):
            with labelled_methods(trainer, side), labelled_modules(towers[trainer]), sampler_output(dpc, out):
                _profiled(tallies[trainer], lambda: trainer.forward_backward(step_batch))
    n = len(drawn)
    pairs = [len(out[1]) for _, out, _ in drawn]
    phases = {name: _phases(tallies[backbone].labels, n, dpc=False),
              dpc_name: _phases(tallies[dpc].labels, n, dpc=True)}

    print(f"\n{dpc_name} and {name}: {n} steps each, on the same image-class pairs ({pairs}), one profiler per step, "
          "alternating order (ms per step, CPU time under each label)")
    print(f"{'phase':<26}{name:>12}{dpc_name:>16}{'difference':>12}")
    for row in phases[name]:
        a, b = phases[name][row], phases[dpc_name][row]
        cells = [f"{v:>{w}.1f}" if v is not None else f"{'-':>{w}}" for v, w in ((a, 12), (b, 16))]
        diff = f"{b - a:>+12.1f}" if a is not None and b is not None else ""
        print(f"{row:<26}{cells[0]}{cells[1]}{diff}")

    b, d = tallies[backbone], tallies[dpc]
    b_total, d_total = sum(b.ms[False].values()) / n, sum(d.ms[False].values()) / n
    print(f"\noperators by self CPU time (per step; all operators: {name} {b_total:.1f} ms, {dpc_name} {d_total:.1f} ms)")
    print(f"{'operator':<48}{'calls':>8}{'ms':>9}{'share':>7}{'calls':>8}{'ms':>9}{'share':>7}")
    for key in sorted(d.ms[False], key=lambda k: -d.ms[False][k])[:top]:
        bm, dm = b.ms[False][key] / n, d.ms[False][key] / n
        print(f"{key[:47]:<48}{b.calls[False][key] / n:>8.4g}{bm:>9.1f}{100 * bm / b_total:>6.1f}%"
              f"{d.calls[False][key] / n:>8.4g}{dm:>9.1f}{100 * dm / d_total:>6.1f}%")

    keys = [k for k in set(b.calls[True]) | set(d.calls[True]) if b.calls[True][k] != d.calls[True][k]]
    keys.sort(key=lambda k: -abs(d.ms[True][k] - b.ms[True][k]))
    extra = sum(d.ms[True][k] - b.ms[True][k] for k in keys) / n
    print(f"\noperators whose calls differ, by input shapes ({len(keys)} kinds, each crop of a negative its own; "
          f"their time {dpc_name} - {name}: {extra:+.1f} ms per step; the {differing} largest differences):")
    print(f"{'operator':<40}{'input shapes':<52}{'calls':>7}{'ms':>8}{'calls':>7}{'ms':>8}")
    for key in keys[:differing]:
        print(f"{key[0][:39]:<40}{key[1][:51]:<52}{b.calls[True][key] / n:>7.3g}{b.ms[True][key] / n:>8.1f}"
              f"{d.calls[True][key] / n:>7.3g}{d.ms[True][key] / n:>8.1f}")
    return phases


def _labelled_draw(dpc, batch):
    with record_function(PREFIX + "sampler"):
        return drawn_pairs(dpc, [batch])
