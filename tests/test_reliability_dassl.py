"""Runs cut short, full disks and hostile files with real Dassl: train.py recovers or stops with one line."""
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("dassl")

from tests._backbone_e2e import build_trainer, make_workspace  # noqa: E402
from tests._faults import Payload  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from trainers.dpc.errors import UnsafeFileError  # noqa: E402

COOP = "configs/trainers/CoOp/vit_b16_c4_ep20_batch32_lr35.yaml"
DPC = "configs/trainers/DPC/CoOp/vit_b16_c4_ep20_batch4_lr35_top8.yaml"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability")
    return {**make_workspace(root), "root": root}


def train_coop(workspace, out, *fault):
    """train.py for CoOp on the base classes (2 epochs), under ``tests._faults`` when ``fault`` is given."""
    args = ["--root", workspace["data"], "--seed", "1", "--trainer", "CoOp", "--config-file", COOP,
            "--dataset-config-file", "configs/datasets/eurosat.yaml", "--output-dir", str(out),
            *workspace["opts"], "DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.MAX_EPOCH", "2"]
    cmd = [sys.executable, "-m", "tests._faults", *fault] if fault else [sys.executable, "train.py"]
    return subprocess.run(cmd + args, cwd=ROOT, capture_output=True, text=True, timeout=600)


def leftovers(out):
    return [os.path.join(d, f) for d, _, files in os.walk(out) for f in files if f.startswith(".tmp-")]


@pytest.fixture(scope="module")
def cut_short(workspace):
    """One run directory through a kill in the first checkpoint save, a full disk in the next run's second save,
    then a run to the end: (the directory, what the kill left, the processes in order)."""
    out = workspace["root"] / "cut_short"
    killed = train_coop(workspace, out, "kill", "1")
    left = sorted(os.listdir(out / "prompt_learner"))
    return out, left, [killed, train_coop(workspace, out, "full", "2"), train_coop(workspace, out)]


def test_a_run_cut_short_in_a_save_goes_on_and_a_full_disk_is_one_line(cut_short):
    out, left, (killed, full, last) = cut_short
    folder = out / "prompt_learner"
    # the kill left a half-written temporary file and no Dassl 'checkpoint' pointer: every rerun used to die with
    # FileNotFoundError: .../prompt_learner/checkpoint; now it starts from scratch
    assert killed.returncode == -9 and len(left) == 1 and left[0].startswith(".tmp-")
    assert full.returncode == 2, full.stderr[-3000:]
    assert "No complete checkpoint in" in "".join(log.read_text() for log in out.glob("log.txt*"))
    lines = [line for line in full.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"error: cannot write {folder / 'model.pth.tar-2'}: no space left on the device"), lines
    assert "Traceback" not in full.stderr and "unexpected pos" not in full.stderr  # torch's words for a full disk
    assert "resuming the interrupted run" in last.stdout  # from epoch 1, the last complete checkpoint
    assert last.returncode == 0, last.stderr[-3000:]
    assert sorted(os.listdir(folder)) == ["checkpoint", "model.pth.tar-1", "model.pth.tar-2"]
    assert (out / "done.json").is_file() and not leftovers(out)


def test_a_dpc_run_that_fails_stops_its_negative_decoding(workspace, cut_short, monkeypatch):
    """Left running, the decode thread is killed inside torch code at exit: "terminate called without an active
    exception" (exit -6) after the run's own error."""
    from trainers.dpc.negatives import DecodedBank

    decode = DecodedBank._decode

    def slow_decode(bank, index):  # a slow disk: the pool is still being decoded when training fails
        bank._stop.wait(60)
        return decode(bank, index)

    monkeypatch.setattr(DecodedBank, "_decode", slow_decode)
    trainer = build_trainer(workspace, "DPC_CoOp", DPC, workspace["root"] / "dpc", "DATASET.SUBSAMPLE_CLASSES", "base",
                            "DPC.STAGE1_DIR", str(cut_short[0]), "DPC.TOPK", "2")
    thread = trainer.dpc_bank._thread
    try:
        assert thread.is_alive()

        def fail(batch):
            raise RuntimeError("a failing step")

        trainer.forward_backward = fail
        with pytest.raises(RuntimeError, match="a failing step"):
            trainer.train()
        assert not thread.is_alive()
    finally:
        trainer.dpc_bank._stop.set()


def test_a_stage1_or_evaluated_checkpoint_with_a_payload_is_refused_unrun(workspace, cut_short):
    marker = workspace["root"] / "payload-ran"
    hostile = workspace["root"] / "hostile"
    (hostile / "prompt_learner").mkdir(parents=True)
    ckpt = torch.load(cut_short[0] / "prompt_learner" / "model.pth.tar-2", weights_only=True)
    torch.save({**ckpt, "note": Payload(marker)}, hostile / "prompt_learner" / "model.pth.tar-2")
    message = f"{hostile / 'prompt_learner' / 'model.pth.tar-2'} holds pickled Python objects"
    with pytest.raises(UnsafeFileError, match=message.replace(".", r"\.")):
        build_trainer(workspace, "DPC_CoOp", DPC, workspace["root"] / "dpc_hostile", "DATASET.SUBSAMPLE_CLASSES",
                      "base", "DPC.STAGE1_DIR", str(hostile), "DPC.TOPK", "2")
    evaluator = build_trainer(workspace, "CoOp", COOP, workspace["root"] / "eval_hostile", "DATASET.SUBSAMPLE_CLASSES",
                              "new")
    with pytest.raises(UnsafeFileError, match=message.replace(".", r"\.")):
        evaluator.load_model(str(hostile), epoch=2)
    assert not marker.exists()
