"""Nothing silently wrong when a run is cut short or handed a hostile file (no Dassl): a full disk, what a killed
save leaves, an output path that is a file, background decoding at exit, files carrying a pickled payload."""
import errno
import os
import pickle
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.fewshot import load_or_create_fewshot
from datasets.records import Record
from tests._faults import Payload
from tests.conftest import ROOT
from trainers import run_dir
from trainers.clip_loader import read_state_dict
from trainers.dpc.checkpoint import atomic_save, load_checkpoint, read_saved_model, rng_states, set_rng_states
from trainers.dpc.errors import DiskFullError, UnsafeFileError, one_line
from trainers.dpc.files import atomic_write


class NoSpaceAfter:
    """A file that takes ``budget`` bytes, then fails as a full device does."""

    def __init__(self, file, budget):
        self.file, self.budget = file, budget

    def write(self, data):
        if len(data) > self.budget:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.budget -= len(data)
        return self.file.write(data)


@pytest.mark.parametrize("writer", ["torch.save", "plain write"])
def test_a_full_disk_is_one_line_naming_the_file_and_the_previous_file_stays(tmp_path, writer):
    path = tmp_path / "prompt_learner" / "model.pth.tar-1"
    atomic_save({"epoch": 1}, str(path))
    before = path.read_bytes()
    if writer == "torch.save":  # torch's zip writer turns the OSError into "unexpected pos 64 vs 0"
        write = lambda f: torch.save({"w": torch.randn(1000)}, NoSpaceAfter(f, 100))  # noqa: E731
    else:
        write = lambda f: NoSpaceAfter(f, 10).write(b"x" * 100)  # noqa: E731
    with pytest.raises(DiskFullError) as err:
        atomic_write(str(path), write)
    message = str(err.value)
    assert message == one_line(err.value) and message.startswith(f"cannot write {path}: no space left on the device")
    assert "run the same command again" in message
    assert path.read_bytes() == before and os.listdir(path.parent) == [path.name]  # no temporary file left


def test_a_held_run_directory_loses_what_killed_saves_left(tmp_path):
    for folder in (tmp_path, tmp_path / "prompt_learner"):
        folder.mkdir(exist_ok=True)
        (folder / ".tmp-k1ll3d").write_bytes(b"PK\x03\x04 half a checkpoint")
    (tmp_path / "prompt_learner" / "model.pth.tar-1").write_bytes(b"kept")
    with run_dir.exclusive(str(tmp_path)):
        assert sorted(os.listdir(tmp_path)) == [".lock", "prompt_learner"]
        assert os.listdir(tmp_path / "prompt_learner") == ["model.pth.tar-1"]


@pytest.mark.parametrize("output", ["a_file", "a_file/run"])
def test_an_output_directory_that_is_a_file_is_one_clear_error(tmp_path, output):
    (tmp_path / "a_file").write_text("")
    out = tmp_path / output
    proc = subprocess.run([sys.executable, "train.py", "--trainer", "CoOp", "--output-dir", str(out),
                           "--dataset-config-file", "configs/datasets/eurosat.yaml", "--root", str(tmp_path),
                           "MODEL.BACKBONE.NAME", "custom", "MODEL.BACKBONE.PATH", str(tmp_path / "clip.pt")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    where = "is" if output == "a_file" else f"lies under {tmp_path / 'a_file'}, which is"
    assert f"error: the output directory {out} {where} a file, not a directory: give another --output-dir" \
        in proc.stderr


AT_EXIT = """
import atexit, sys, threading
decoding = lambda: any(t.name == "dpc-negative-decode" and t.is_alive() for t in threading.enumerate())
atexit.register(lambda: print("decoding when the interpreter finalizes:", decoding(), flush=True))  # runs last
from torchvision import transforms as T
from trainers.dpc.negatives import negative_bank
bank = negative_bank(sys.argv[1:] * 3000, T.Compose([T.RandomResizedCrop(8), T.ToTensor()]), log=None)
assert decoding()
raise RuntimeError("the run failed")
"""


def test_negative_decoding_stops_before_the_interpreter_finalizes(tmp_path):
    """A decode thread still running at finalization dies inside torch code: "terminate called without an active
    exception", exit -6."""
    images = []
    for k in range(4):
        images.append(str(tmp_path / f"{k}.png"))
        Image.new("RGB", (16, 16), (60 * k, 0, 0)).save(images[-1])
    proc = subprocess.run([sys.executable, "-c", AT_EXIT, *images], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and "RuntimeError: the run failed" in proc.stderr, proc.stderr[-2000:]
    assert "decoding when the interpreter finalizes: False" in proc.stdout


# ---------------------------------------------------------------- files carrying a payload
@pytest.fixture
def payload(tmp_path):
    marker = tmp_path / "payload-ran"

    def plant(path, obj):
        """Save ``obj`` with a payload at ``path``; check that plain unpickling would run it."""
        torch.save({**obj, "note": Payload(marker)}, path)
        torch.load(path, weights_only=False)
        assert marker.exists()
        marker.unlink()

    plant.marker = marker
    return plant


def test_checkpoints_and_clip_weights_with_a_payload_are_refused_unrun(tmp_path, payload, tiny_clip_file):
    run = tmp_path / "run"
    path = run / "prompt_learner" / "model.pth.tar-1"
    path.parent.mkdir(parents=True)
    payload(path, {"state_dict": {"ctx": torch.zeros(4, 8)}, "epoch": 1})
    clip_file = tmp_path / "clip.pt"
    payload(clip_file, torch.load(tiny_clip_file, weights_only=True))
    reads = {"checkpoint (stage 1, PromptKD teacher)": lambda: load_checkpoint(str(path)),
             "--model-dir": lambda: read_saved_model(str(run), "prompt_learner", 1),
             "CLIP weights": lambda: read_state_dict(clip_file)}
    for what, read in reads.items():
        with pytest.raises(UnsafeFileError) as err:
            read()
        assert str(err.value).startswith(f"{path if what != 'CLIP weights' else clip_file} holds pickled Python "
                                         "objects that no checkpoint or weight file holds (builtins.exec)"), what
        assert "nothing in it was run" in str(err.value)
        assert not payload.marker.exists(), what


def test_a_fewshot_cache_with_a_payload_is_refused_unrun(tmp_path):
    train = [Record(f"/x/{i}.jpg", i % 2, f"c{i % 2}") for i in range(6)]
    path = tmp_path / "split_fewshot" / "shot_1-seed_0.pkl"
    path.parent.mkdir()
    marker = tmp_path / "payload-ran"
    with open(path, "wb") as f:
        pickle.dump({"train": [Payload(marker)]}, f)
    with pytest.raises(UnsafeFileError, match=r"holds pickled Python objects that no dataset cache holds \(builtins"):
        load_or_create_fewshot(str(path), train, None, 1, seed=0, log=lambda line: None)
    assert not marker.exists()


def test_checkpoints_hold_plain_types_and_older_ones_still_load(tmp_path):
    """The RNG states are saved as tensors and plain types; older checkpoints (a NumPy RNG state, Dassl's
    pickled scheduler and optimizer objects) load through the allowances of ``safe_load``."""
    np.random.seed(3)
    random.seed(3)
    torch.manual_seed(3)
    path = tmp_path / "model.pth.tar-1"
    atomic_save({"rng": rng_states()}, str(path))
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) == []
    draws = lambda: (np.random.rand(3).tolist(), random.random(), torch.rand(2).tolist())  # noqa: E731
    expected = draws()
    np.random.seed(0)
    random.seed(0)
    torch.manual_seed(0)
    set_rng_states(load_checkpoint(str(path))["rng"])
    assert draws() == expected

    param = torch.nn.Parameter(torch.zeros(2))
    optim = torch.optim.SGD([param], lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, 5)
    old = {"state_dict": {"ctx": param.detach()}, "epoch": 1, "scheduler": {"successor": sched},
           "rng": {**rng_states(), "numpy": np.random.get_state()}}
    torch.save(old, path)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path))  # what weights_only refuses by default
    loaded = load_checkpoint(str(path))
    assert loaded["scheduler"]["successor"].state_dict() == sched.state_dict()
    expected = draws()
    set_rng_states(loaded["rng"])
    assert draws() == expected
