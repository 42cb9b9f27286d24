"""Where a DPC stage-2 step spends its time, next to its backbone's step on as many images (torch.profiler, CPU).

``profile_steps(backbone, dpc, dpc_batches, backbone_batches)`` profiles DPC steps, each followed by one backbone
step on exactly as many images as that DPC step had image-class pairs, and prints for the pair of trainers (ms per
step):
- phases: DPC's sampler (stage-1 scoring of the anchors, the choice, the negative images), the forward of the pairs
  (their features), the loss (the pairs' concatenation, L_CL and any parallel terms), backward, the optimizer update
  (zero_grad and step); the backbone's forward with its loss (``compute_loss``), backward, update; the rest of
  ``forward_backward``; forward + loss and the step without the sampler compare like with like;
- modules: the forward of the image and text towers (the submodules DPC reads its features from) over every pass
  of the step (DPC: the stage-1 scoring of the anchors too), inclusive;
- operators: the heaviest by self CPU time (calls and ms per step on both sides), then the operators, by input
  shapes, whose calls differ: the work one side does and the other does not.

    python bench/dpc_step.py --profile [--backbones MaPLe]
"""
from __future__ import annotations

import collections
import contextlib

from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from trainers.dpc.features import replaced

PREFIX = "dpc_bench/"
PHASES = {  # label: (DPC trainer method, backbone trainer method); None where the side has no such method
    "sampler": ("dpc_batch", None),
    "forward": ("_dpc_train_features", "compute_loss"),
    "loss": ("dpc_loss", None),  # DPC's whole loss; the sampler and forward are taken off below
    "backward": ("model_backward", "model_backward"),
    "update": ("model_update", "model_update"),
    "zero_grad": ("model_zero_grad", "model_zero_grad"),
    "step": ("forward_backward", "forward_backward"),
}


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


def _towers(trainer, sites):
    modules = dict(getattr(trainer.model, "module", trainer.model).named_modules())
    return {"image tower": modules[sites.image], "text tower": modules[sites.text]}


def _run(trainer, side, batches, sites):
    """Profile ``trainer.forward_backward`` on each batch; returns (profile, what each step returned)."""
    outputs = []
    with labelled_methods(trainer, side), labelled_modules(_towers(trainer, sites)), \
            profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for batch in batches:
            outputs.append(trainer.forward_backward(batch))
    return prof, outputs


def _label_ms(prof, steps):
    totals = collections.Counter()
    for event in prof.key_averages():
        if event.key.startswith(PREFIX):
            totals[event.key[len(PREFIX):]] += event.cpu_time_total / 1e3 / steps
    return totals


def _phases(labels, dpc: bool):
    """Exclusive phases (ms per step) from the inclusive labels."""
    forward = labels["forward"]
    loss = labels["loss"] - labels["sampler"] - forward if dpc else 0.0
    rows = {"sampler": labels["sampler"] if dpc else None, "forward": forward, "loss": loss if dpc else None,
            "backward": labels["backward"], "update": labels["update"] + labels["zero_grad"]}
    rows["rest"] = labels["step"] - sum(v for v in rows.values() if v is not None)
    rows["forward + loss"] = forward + loss
    rows["total"] = labels["step"]
    rows["total without sampler"] = labels["step"] - (labels["sampler"] if dpc else 0.0)
    rows["image tower (every pass)"] = labels["image tower"]  # DPC: the scoring pass's too
    rows["text tower (every pass)"] = labels["text tower"]
    return rows


def _operators(prof, steps, by_shapes):
    calls, ms = collections.Counter(), collections.Counter()
    for event in prof.key_averages(group_by_input_shape=by_shapes):
        if event.key.startswith(PREFIX):
            continue
        key = (event.key, str(event.input_shapes)) if by_shapes else event.key
        calls[key] += event.count / steps
        ms[key] += event.self_cpu_time_total / 1e3 / steps
    return calls, ms


def profile_steps(backbone, dpc, dpc_batches, backbone_batches, top=12, differing=12):
    """Profile ``len(dpc_batches)`` DPC steps and as many backbone steps on the same number of images each; print
    the tables and return the phases {trainer: {phase: ms per step}}."""
    name, dpc_name = type(backbone).__name__, type(dpc).__name__
    sites = dpc.dpc_capture.sites
    for trainer in (backbone, dpc):
        trainer.set_model_mode("train")
        trainer.num_batches, trainer.batch_idx = 10 ** 9, 0
    dpc_prof, outputs = _run(dpc, 0, dpc_batches, sites)
    pairs = [out["pairs"] for out in outputs]
    equal = [{k: v[:n] for k, v in batch.items()} for batch, n in zip(backbone_batches, pairs)]
    backbone_prof, _ = _run(backbone, 1, equal, sites)
    steps = len(pairs)
    phases = {name: _phases(_label_ms(backbone_prof, steps), dpc=False),
              dpc_name: _phases(_label_ms(dpc_prof, steps), dpc=True)}

    print(f"\n{dpc_name} and {name}: {steps} steps profiled, {pairs} image-class pairs = backbone images "
          "(ms per step, CPU time under each label)")
    print(f"{'phase':<24}{name:>12}{dpc_name:>16}{'difference':>12}")
    for row in phases[name]:
        a, b = phases[name][row], phases[dpc_name][row]
        cells = [f"{v:>{w}.1f}" if v is not None else f"{'-':>{w}}" for v, w in ((a, 12), (b, 16))]
        diff = f"{b - a:>+12.1f}" if a is not None and b is not None else ""
        print(f"{row:<24}{cells[0]}{cells[1]}{diff}")

    b_calls, b_ms = _operators(backbone_prof, steps, by_shapes=False)
    d_calls, d_ms = _operators(dpc_prof, steps, by_shapes=False)
    d_total, b_total = sum(d_ms.values()), sum(b_ms.values())
    print(f"\noperators by self CPU time (per step; all operators: {name} {b_total:.1f} ms, {dpc_name} {d_total:.1f} ms)")
    print(f"{'operator':<48}{'calls':>8}{'ms':>9}{'share':>7}{'calls':>8}{'ms':>9}{'share':>7}")
    for key in sorted(d_ms, key=lambda k: -d_ms[k])[:top]:
        print(f"{key[:47]:<48}{b_calls[key]:>8g}{b_ms[key]:>9.1f}{100 * b_ms[key] / b_total:>6.1f}%"
              f"{d_calls[key]:>8g}{d_ms[key]:>9.1f}{100 * d_ms[key] / d_total:>6.1f}%")

    b_calls, b_ms = _operators(backbone_prof, steps, by_shapes=True)
    d_calls, d_ms = _operators(dpc_prof, steps, by_shapes=True)
    keys = [k for k in set(b_calls) | set(d_calls) if b_calls[k] != d_calls[k]]
    keys.sort(key=lambda k: -abs(d_ms[k] - b_ms[k]))
    extra = sum(d_ms[k] - b_ms[k] for k in keys)
    print(f"\noperators whose calls per step differ, by input shapes ({len(keys)} kinds, each crop of a negative its "
          f"own; their time {dpc_name} - {name}: {extra:+.1f} ms per step; the {differing} largest differences):")
    print(f"{'operator':<40}{'input shapes':<52}{'calls':>7}{'ms':>8}{'calls':>7}{'ms':>8}")
    for key in keys[:differing]:
        print(f"{key[0][:39]:<40}{key[1][:51]:<52}{b_calls[key]:>7g}{b_ms[key]:>8.1f}{d_calls[key]:>7g}"
              f"{d_ms[key]:>8.1f}")
    return phases
