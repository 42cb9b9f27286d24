"""What train.py shows on the terminal: quiet by default, everything with --verbose or DPC_VERBOSE=1.

Quiet mode keeps the terminal to a stage header, a progress bar with an ETA per stage (training steps,
then evaluation batches), the resume notice and the result lines. Everything Dassl prints still goes to
the run's log file (``<output-dir>/log.txt``, written by Dassl's ``setup_logger``, which tees stdout),
exactly as in verbose mode: the quiet stream only sits where the terminal was, behind that tee.

Importing this module hides our dependencies' deprecation warnings (pkg_resources in clip and outdated,
torch.jit, ...), unless verbose output was asked for: train.py imports it before the modules that warn.
"""
import contextlib
import os
import re
import sys
import traceback
import warnings

from .dpc.errors import UserError, one_line
from .dpc.files import disk_full, exception_chain, out_of_space

ENV = "DPC_VERBOSE"
FLAG = "--verbose"
PROGRESS_ENV = "DPC_PROGRESS_SECONDS"

# lines the quiet terminal still shows (the rest only goes to the log)
SHOWN = re.compile(
    r"^(=> result"                 # Dassl's evaluator: "=> result", then "* accuracy: 81.2%", ...
    r"|\* "
    r"|.*\(will resume training\)"  # Dassl's resume notice
    r"|DPC sweep"                  # a weight sweep's labels and its summary table
    r"|(?i:warning):"              # our warnings (unchecked classes, short classes, no RNG state to resume)
    r"|note:"                      # options fitted to the machine or to a custom CLIP (train.py)
    r"|  w_(new|base)=)")
BAR = "{desc}: {percentage:3.0f}%|{bar:24}| {n_fmt}/{total_fmt} [{elapsed}, ETA {remaining}{postfix}]"


def shots_text(num_shots: int) -> str:
    """DATASET.NUM_SHOTS in words: '16 shots', or 'all images' for 0 (Dassl's convention: no few-shot sampling)."""
    return f"{num_shots} shots" if num_shots > 0 else "all images"


def verbose_requested(flag: bool = False) -> bool:
    """--verbose, or DPC_VERBOSE set to anything but empty / 0 / false / no."""
    return flag or os.environ.get(ENV, "").strip().lower() not in ("", "0", "false", "no")


def filter_warnings():
    """Hide the deprecation noise of our dependencies; other warnings still reach stderr."""
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    # outdated (imported by wilds, imported by Dassl) asks PyPI for newer versions in the background
    warnings.filterwarnings("ignore", module=r"outdated(\.|$)")
    # torch, when Dassl restores a scheduler on resume (the wrapped optimizer.step is Dassl's own)
    warnings.filterwarnings("ignore", message=re.escape("Seems like `optimizer.step()` has been overridden"),
                            category=UserWarning)


if not verbose_requested(FLAG in sys.argv[1:]):
    filter_warnings()


def exit_on_user_error(main, args, verbose: bool) -> int:
    """Run ``main(args)`` and return its status (None: 0); an error of ours (``UserError``) becomes one ``error:``
    line on stderr and status 2, and so does a full disk wherever it was hit (writing the log, for instance).

    Its traceback goes to the run's log when one is open (Dassl's logger behind ``sys.stdout``: in quiet mode
    the terminal does not show it) and to the terminal with ``verbose``. Other exceptions keep their traceback.
    """
    try:
        return main(args) or 0
    except Exception as err:
        if not isinstance(err, UserError) and not out_of_space(err):
            raise
        details = traceback.format_exc()
        log = getattr(sys.stdout, "file", None)  # dassl.utils.Logger tees to <output-dir>/log.txt
        hint = f" (traceback: {ENV}=1, or train.py {FLAG})"
        if verbose:
            sys.stderr.write(details)
            hint = ""
        elif log is not None:
            try:
                sys.stdout.write(details)
                sys.stdout.flush()
                hint = " (traceback in the run's log.txt)"
            except OSError:  # the log cannot be written (a full disk): leave it, or exiting would fail again
                sys.stdout.file = None
                with contextlib.suppress(OSError):
                    log.close()
        if not isinstance(err, UserError):  # out of space outside atomic_write: name the file when known
            failed = next((e.filename for e in exception_chain(err) if getattr(e, "filename", None)), None)
            err = disk_full(failed or (log.name if log is not None and log.closed else "a file (see the traceback)"))
        sys.stderr.write(f"error: {one_line(err)}{hint}\n")
        return 2


class QuietStream:
    """A stdout stand-in that passes only the SHOWN lines to the terminal (whole lines, in order)."""

    def __init__(self, terminal):
        self.terminal = terminal
        self.pending = ""
        self.training = False  # True while the training bar is open: no lines then (e.g. val results)

    def write(self, text):
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self._show(line)
        return len(text)

    def _show(self, line):
        if self.training or not SHOWN.match(line):
            return
        from tqdm import tqdm

        tqdm.write(line, file=self.terminal)  # clears and redraws an open bar
        self.terminal.flush()

    def flush(self):
        self.terminal.flush()

    def close(self):
        # Dassl's Logger closes its console at exit: keep the real stdout open
        if self.pending:
            self._show(self.pending)
            self.pending = ""
        self.terminal.flush()


class Console:
    """Terminal side of one train.py run (see the module docstring)."""

    def __init__(self, verbose: bool, terminal=None):
        self.verbose = verbose
        self.terminal = terminal or sys.stdout
        self.stream = None
        self.bar = None

    def say(self, text: str):
        self.terminal.write(text + "\n")
        self.terminal.flush()

    def progress(self, desc: str, total: int, **kwargs):
        from tqdm import tqdm

        tty = hasattr(self.terminal, "isatty") and self.terminal.isatty()
        # on a pipe or a file a bar is redrawn at most every 30 s, or DPC_PROGRESS_SECONDS (a sweep's job logs: 5 s);
        # it always ends with its final state
        every = 0.1 if tty else float(os.environ.get(PROGRESS_ENV) or 30.0)
        return tqdm(total=total, desc=desc, file=self.terminal, bar_format=BAR, dynamic_ncols=tty,
                    mininterval=every, **kwargs)

    # ------------------------------------------------------------------ stages
    def header(self, cfg, eval_only: bool):
        stage = "eval" if eval_only else "train"
        d = cfg.DATASET
        classes = d.get("SUBSAMPLE_CLASSES", "all")
        self.say(f"[{stage}] {cfg.TRAINER.NAME} on {d.NAME}: {classes} classes, {shots_text(d.NUM_SHOTS)}, seed {cfg.SEED}")
        where = f"        output {cfg.OUTPUT_DIR}"
        if not self.verbose:
            where += f" (details: its log.txt, or {ENV}=1 / {FLAG})"
        self.say(where)

    def start(self, cfg, eval_only: bool = False):
        """Print the stage header; in quiet mode put the filter where Dassl's log tee will find the terminal."""
        self.header(cfg, eval_only)
        if self.verbose:
            return
        self.stream = QuietStream(self.terminal)
        sys.stdout = self.stream
        self._patch_dassl_eval_bar()

    def _patch_dassl_eval_bar(self):
        # Dassl's test loop wraps its loader in its module's tqdm (a bar on stderr): ours instead, for
        # the rest of this process (train.py runs one trainer per process)
        try:
            import dassl.engine.trainer as dassl_trainer
        except ImportError:
            return

        def eval_bar(iterable, **kwargs):
            total = len(iterable) if hasattr(iterable, "__len__") else None
            bar = self.progress("eval", total, disable=self.bar is not None)  # no second bar while training
            return _Counted(iterable, bar)

        dassl_trainer.tqdm = eval_bar

    def attach(self, trainer):
        """Advance a training bar once per step (total = remaining epochs x batches), close it before the final test."""
        if self.verbose:
            return
        step, after_train = trainer.forward_backward, trainer.after_train

        def forward_backward(batch):
            if self.bar is None:  # first step: before_train() has set start_epoch (a resumed run counts the rest)
                batches = getattr(trainer, "num_batches", None) or len(trainer.train_loader_x)
                self.bar = self.progress("train", (trainer.max_epoch - trainer.start_epoch) * batches)
                self.stream.training = True
            summary = step(batch)
            postfix = f"epoch {trainer.epoch + 1}/{trainer.max_epoch}"
            if isinstance(summary, dict) and "loss" in summary:
                postfix += f", loss {float(summary['loss']):.4f}"
            self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.update(1)
            return summary

        def finish_training():
            self.close_bar()
            return after_train()

        trainer.forward_backward = forward_backward
        trainer.after_train = finish_training

    def close_bar(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.stream is not None:
            self.stream.training = False


class _Counted:
    """Iterate ``iterable`` and advance ``bar`` per item; the bar closes when the loop ends."""

    def __init__(self, iterable, bar):
        self.iterable, self.bar = iterable, bar

    def __len__(self):
        return len(self.iterable)

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.bar.update(1)
        finally:
            self.bar.close()
