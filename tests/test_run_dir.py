"""One process per run directory, settings fingerprints, and the class checks of checkpoints (no Dassl)."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from yacs.config import CfgNode as CN

from tests.conftest import ROOT
from trainers import run_dir
from trainers.dpc.checkpoint import check_classes, expected_training_classes
from trainers.provenance import VERSION_KEY
from trainers.version import BEHAVIOUR_VERSION

HOLD = ("import sys, time; from trainers.run_dir import exclusive\n"
        "with exclusive(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n")


def test_a_held_directory_is_refused_at_once_and_freed_when_the_holder_is_killed(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with pytest.raises(run_dir.RunDirError, match=f"is in use by process {holder.pid} on .*: -c"):
            with run_dir.exclusive(str(tmp_path)):
                pass
        assert time.monotonic() - start < 1.0  # refused at once, not after a wait
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run_dir.exclusive(str(tmp_path)):  # a killed holder leaves nothing stuck
        assert "process" in (tmp_path / ".lock").read_text()
    assert (tmp_path / ".lock").read_text() == ""


def test_with_wait_for_lock_a_held_directory_is_waited_for(tmp_path, monkeypatch):
    """What two sweeps over one output root rely on: the second waits for the run, then finds it finished."""
    monkeypatch.setenv(run_dir.WAIT_ENV, "1")
    holder = subprocess.Popen([sys.executable, "-c", HOLD.replace("60", "1.0"), str(tmp_path)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with run_dir.exclusive(str(tmp_path)):
            assert holder.wait(timeout=5) == 0  # we got the directory only once the holder was done
            assert str(os.getpid()) in (tmp_path / ".lock").read_text()
        assert time.monotonic() - start > 0.3
    finally:
        holder.kill()
        holder.wait()


def make_cfg(**dpc):
    cfg = CN()
    cfg.OUTPUT_DIR = "out"
    cfg.SEED = 1
    cfg.TRAIN = CN({"PRINT_FREQ": 5})
    cfg.OPTIM = CN({"LR": 0.002, "MAX_EPOCH": 20})
    cfg.INPUT = CN({"SIZE": (224, 224)})
    cfg.TRAINER = CN({"NAME": "DPC_CoOp", "COOP": CN({"N_CTX": 4}), "MAPLE": CN({"N_CTX": 2})})
    cfg.DPC = CN(dict({"STAGE1_DIR": "", "STAGE1_EPOCH": -1, "W_BASE": 0.2}, **dpc))
    return cfg


def test_fingerprint_holds_what_determines_results_only():
    values = run_dir.fingerprint(make_cfg())
    assert values["OPTIM.LR"] == 0.002 and values["INPUT.SIZE"] == [224, 224] and values["DPC.W_BASE"] == 0.2
    assert "OUTPUT_DIR" not in values and "TRAIN.PRINT_FREQ" not in values  # where and how much it prints
    assert "TRAINER.MAPLE.N_CTX" not in values and values["TRAINER.COOP.N_CTX"] == 4  # other backbones' options
    backbone = make_cfg()
    backbone.TRAINER.NAME = "CoOp"
    assert not any(key.startswith("DPC.") for key in run_dir.fingerprint(backbone))  # the scripts pass DPC options too
    moved = make_cfg()
    moved.OUTPUT_DIR, moved.TRAIN.PRINT_FREQ = "elsewhere", 1
    assert run_dir.fingerprint(moved) == values
    upstream = make_cfg()
    upstream.TRAINER.NAME = "MyLearner"  # outside the TRAINER.<NAME> convention: every key counts
    assert "TRAINER.MAPLE.N_CTX" in run_dir.fingerprint(upstream)


def test_a_plugin_trainer_reads_its_backbones_node_and_its_own_node_only():
    cfg = make_cfg()
    cfg.DEPT = CN({"WEIGHT": 0.7})
    dpc = run_dir.fingerprint(cfg)
    assert dpc["DPC.W_BASE"] == 0.2 and "DEPT.WEIGHT" not in dpc
    cfg.TRAINER.NAME = "DePT_CoOp"
    dept = run_dir.fingerprint(cfg)
    assert dept["DEPT.WEIGHT"] == 0.7 and dept["TRAINER.COOP.N_CTX"] == 4
    assert not any(key.startswith(("DPC.", "TRAINER.MAPLE.")) for key in dept)


def test_fingerprint_follows_the_content_of_the_stage1_checkpoint(tmp_path):
    (tmp_path / "prompt_learner").mkdir()
    ckpt = tmp_path / "prompt_learner" / "model.pth.tar-2"
    torch.save({"state_dict": {"ctx": torch.zeros(4, 8)}}, ckpt)
    cfg = make_cfg(STAGE1_DIR=str(tmp_path), STAGE1_EPOCH=2)
    first = run_dir.fingerprint(cfg)
    assert first["DPC.STAGE1_DIR"] == str(tmp_path) and set(first["stage-1 checkpoints"]) == {"prompt_learner"}
    torch.save({"state_dict": {"ctx": torch.ones(4, 8)}}, ckpt)  # stage 1 retrained in the same place
    changed = run_dir.differences(first, run_dir.fingerprint(cfg))
    assert len(changed) == 1 and changed[0].startswith("stage-1 checkpoints:")


def test_fingerprint_follows_the_content_of_promptkds_teacher(tmp_path):
    (tmp_path / "VLPromptLearner").mkdir()
    ckpt = tmp_path / "VLPromptLearner" / "model-best.pth.tar"
    torch.save({"state_dict": {"prompt_learner.ctx": torch.zeros(4, 8)}}, ckpt)
    cfg = make_cfg(STAGE1_DIR="")
    cfg.TRAINER.NAME = "PromptKD"
    (tmp_path / "teacher-clip.pt").write_bytes(b"the teacher's CLIP weights")
    cfg.TRAINER.PROMPTKD = CN({"TEACHER_DIR": str(tmp_path), "TEACHER_EPOCH": -1, "TEACHER_NAME": "custom",
                               "TEACHER_PATH": str(tmp_path / "teacher-clip.pt")})
    first = run_dir.fingerprint(cfg)
    assert set(first["teacher checkpoints"]) == {"VLPromptLearner"}
    torch.save({"state_dict": {"prompt_learner.ctx": torch.ones(4, 8)}}, ckpt)  # another teacher in the same place
    changed = run_dir.differences(first, run_dir.fingerprint(cfg))
    assert len(changed) == 1 and changed[0].startswith("teacher checkpoints:")
    cfg.TRAINER.NAME = "CoOp"  # other trainers do not read the teacher
    assert "teacher checkpoints" not in run_dir.fingerprint(cfg)


def test_previous_runs_are_reused_or_resumed_only_with_the_same_settings(tmp_path):
    version = {VERSION_KEY: BEHAVIOUR_VERSION}
    values = {"OPTIM.MAX_EPOCH": 20, "DPC.TOPK": 8, **version}
    assert run_dir.previous_run(str(tmp_path), values) == "new"
    (tmp_path / "log.txt").write_text("a run that failed before its first checkpoint\n")
    assert run_dir.previous_run(str(tmp_path), values) == "new"
    run_dir.record(str(tmp_path), values)
    (tmp_path / "prompt_learner").mkdir()
    (tmp_path / "prompt_learner" / "checkpoint").write_text("model.pth.tar-1\n")
    assert run_dir.previous_run(str(tmp_path), values) == "interrupted"
    (tmp_path / "done.json").write_text("{}")
    assert run_dir.previous_run(str(tmp_path), values) == "finished"
    with pytest.raises(run_dir.RunDirError, match="finished run with other settings:\n"
                       "  DPC.TOPK: 8 -> 3\n  OPTIM.MAX_EPOCH: 20 -> 5\nUse FORCE=1"):
        run_dir.previous_run(str(tmp_path), {"OPTIM.MAX_EPOCH": 5, "DPC.TOPK": 3, **version})
    # a key added to the code since the run was recorded: unchanged at its default, a change otherwise
    newer = dict(values, **{"DPC.NEGATIVES": "hard"})
    assert run_dir.previous_run(str(tmp_path), newer, defaults={"DPC.NEGATIVES": "hard"}) == "finished"
    with pytest.raises(run_dir.RunDirError, match="DPC.NEGATIVES: '<absent>' -> 'random'"):
        run_dir.previous_run(str(tmp_path), dict(values, **{"DPC.NEGATIVES": "random"}),
                             defaults={"DPC.NEGATIVES": "hard"})
    with pytest.raises(run_dir.RunDirError, match="DPC.NEGATIVES"):
        run_dir.previous_run(str(tmp_path), newer)  # no defaults given: any new key is a change
    os.remove(tmp_path / "fingerprint.json")
    with pytest.raises(run_dir.RunDirError, match="without fingerprint.json"):
        run_dir.previous_run(str(tmp_path), values)
    run_dir.forget_finished(str(tmp_path))
    assert not (tmp_path / "done.json").exists()


class FakeDataset:
    classnames = ["tulip", "owl"]
    base_classnames = ["cat", "dog"]


def test_evaluated_checkpoints_must_come_from_the_matching_classes(capsys):
    data = FakeDataset()
    assert expected_training_classes(data, "new") == (["cat", "dog"], "the base classes of the dataset evaluated here")
    assert expected_training_classes(data, "base")[0] == ["tulip", "owl"]
    assert expected_training_classes(data, "all") == (None, "")  # transfer to other datasets is allowed
    expected, what = expected_training_classes(data, "new")
    check_classes("m.pth", {"classnames": ["cat", "dog"]}, expected, what)
    with pytest.raises(ValueError, match=r"m.pth was trained on other classes \(2: river, forest\) than the base "
                                         r"classes of the dataset evaluated here \(2: cat, dog\)"):
        check_classes("m.pth", {"classnames": ["river", "forest"]}, expected, what)


def test_checkpoints_without_class_names_are_checked_by_what_they_reveal(capsys):
    upstream = {"state_dict": {"ctx": torch.zeros(4, 8), "token_prefix": torch.zeros(3, 1, 8)}}
    with pytest.raises(ValueError, match=r"other classes \(3 of them, by its token buffers\) than stage 2 \(2\)"):
        check_classes("up.pth", upstream, ["cat", "dog"], "stage 2")
    upstream["state_dict"]["token_prefix"] = torch.zeros(2, 1, 8)
    check_classes("up.pth", upstream, ["cat", "dog"], "stage 2")
    assert "up.pth does not record the classes it was trained on; only its class count (2) and its prompt " \
           "shapes could be checked against stage 2" in capsys.readouterr().out
    check_classes("bare.pth", {"state_dict": {"ctx": torch.zeros(4, 8)}}, ["cat", "dog"], "stage 2")
    assert "only its prompt shapes could be checked" in capsys.readouterr().out
