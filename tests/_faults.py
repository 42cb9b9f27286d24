"""Faults for the tests: a train.py whose N-th ``torch.save`` (in training: the N-th checkpoint) is cut short, and
a pickled payload.

A train.py run with the fault:

    python -m tests._faults kill N train.py-arguments...   # SIGKILL after part of the file is written
    python -m tests._faults full N train.py-arguments...   # the write fails as on a full device (ENOSPC)

Everything else is the real code path: train.py, Dassl's loop, the atomic checkpoint writer and torch's zip
writer, which gets a file that accepts some bytes and then fails as a kill or a full disk would make it.
"""
import errno
import os
import runpy
import signal
import sys

import torch

WRITTEN_BEFORE_FAULT = 600  # bytes: the zip header and part of the pickle


class Payload:
    """Pickles as a call that writes ``marker`` when the file is unpickled (what a hostile file carries)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


class FaultyFile:
    """Passes writes to ``file`` until ``budget`` bytes went through, then ``fault()``."""

    def __init__(self, file, budget, fault):
        self.file, self.budget, self.fault = file, budget, fault

    def write(self, data):
        data = bytes(data)
        if len(data) > self.budget:
            self.file.write(data[:self.budget])
            self.budget = 0
            self.fault(self.file)
        self.budget -= len(data)
        return self.file.write(data)

    def flush(self):
        self.file.flush()


def kill(file):
    file.flush()  # the partial file is on disk, as a kill during the write leaves it
    os.kill(os.getpid(), signal.SIGKILL)


def full(file):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def main():
    fault, nth, *arguments = sys.argv[1:]
    fault = {"kill": kill, "full": full}[fault]
    save, calls = torch.save, []

    def faulty_save(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == int(nth):
            f = FaultyFile(f, WRITTEN_BEFORE_FAULT, fault)
        return save(obj, f, *args, **kwargs)

    torch.save = faulty_save
    sys.argv = ["train.py", *arguments]
    runpy.run_path("train.py", run_name="__main__")


if __name__ == "__main__":
    main()
