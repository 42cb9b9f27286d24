"""What produced a run besides its options (weights, dataset files, code version), options fitted to a custom
CLIP, and errors of ours as one line (no Dassl)."""
import json
import os
import re
import subprocess
import sys

import pytest
from yacs.config import CfgNode as CN

from tests.conftest import ROOT
from tools.synthetic_data import make_dataset
from trainers import fit_clip, provenance, run_dir, version
from trainers.config import extend_cfg
from trainers.dpc.errors import ConfigError, UserError, one_line


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(provenance.CACHE_ENV, str(tmp_path / "cache"))


def test_every_behaviour_version_has_its_note_and_the_rule_is_documented():
    assert sorted(version.CHANGES) == list(range(1, version.BEHAVIOUR_VERSION + 1))
    assert all(len(note.strip()) > 20 for note in version.CHANGES.values())
    rules = open(os.path.join(ROOT, "CONTRIBUTING.md"), encoding="utf-8").read()
    assert "BEHAVIOUR_VERSION" in rules and "trainers/version.py" in rules


def test_weight_digests_are_cached_until_the_file_changes(tmp_path, monkeypatch):
    weights = tmp_path / "clip.pt"
    weights.write_bytes(b"one")
    hashed = []
    real = provenance.sha256_of
    monkeypatch.setattr(provenance, "sha256_of", lambda path: hashed.append(path) or real(path))
    first = provenance.clip_weights("custom", str(weights))
    assert provenance.clip_weights("custom", str(weights)) == first and len(hashed) == 1  # a stat, no hashing
    weights.write_bytes(b"two")  # replaced in place, same size
    second = provenance.clip_weights("custom", str(weights))
    assert second != first and second.startswith("sha256:") and len(hashed) == 2
    cache = json.loads((tmp_path / "cache" / "digests.json").read_text())
    assert len(cache) == 1  # the older version's entry is dropped
    assert provenance.clip_weights("custom", str(tmp_path / "absent.pt")).startswith("<not found")


def cfg_for(data_root, trainer="CoOp", shots=4):
    cfg = CN()
    cfg.SEED = 1
    cfg.TRAINER = CN({"NAME": trainer})
    cfg.MODEL = CN({"BACKBONE": CN({"NAME": "custom", "PATH": ""})})
    cfg.DATASET = CN({"NAME": "EuroSAT", "ROOT": str(data_root), "NUM_SHOTS": shots})
    return cfg


def test_dataset_files_are_the_split_file_and_the_runs_fewshot_cache(tmp_path):
    make_dataset(str(tmp_path), "eurosat", n_classes=4, train_per_class=2)
    cfg = cfg_for(tmp_path)
    first = provenance.dataset_files(cfg.DATASET, cfg.SEED)
    assert list(first) == ["split_zhou_EuroSAT.json"]
    fewshot = tmp_path / "eurosat" / "split_fewshot" / "shot_4-seed_1.pkl"
    fewshot.parent.mkdir()
    fewshot.write_bytes(b"subset")
    assert set(provenance.dataset_files(cfg.DATASET, cfg.SEED)) == {"split_zhou_EuroSAT.json",
                                                                    "split_fewshot/shot_4-seed_1.pkl"}
    assert list(provenance.dataset_files(cfg.DATASET, 2)) == ["split_zhou_EuroSAT.json"]  # another seed's cache
    make_dataset(str(tmp_path), "eurosat", n_classes=6, train_per_class=2)  # regenerated at the same root
    again = provenance.dataset_files(cfg.DATASET, cfg.SEED)
    assert again["split_zhou_EuroSAT.json"] != first["split_zhou_EuroSAT.json"]
    cfg.DATASET.NAME = "NotOurs"
    assert provenance.dataset_files(cfg.DATASET, cfg.SEED) == {}


def recorded_run(directory, values, finished=True):
    run_dir.record(str(directory), values)
    (directory / "prompt_learner").mkdir(exist_ok=True)
    (directory / "prompt_learner" / "checkpoint").write_text("model.pth.tar-1\n")
    (directory / "prompt_learner" / "model.pth.tar-1").write_bytes(b"weights")
    if finished:
        (directory / "done.json").write_text("{}")


def test_a_run_of_another_code_version_is_neither_reused_nor_resumed_and_force_starts_it_over(tmp_path):
    now = {"OPTIM.MAX_EPOCH": 2, provenance.VERSION_KEY: version.BEHAVIOUR_VERSION, "CLIP weights": "sha256:a"}
    recorded_run(tmp_path, dict(now, **{provenance.VERSION_KEY: version.BEHAVIOUR_VERSION - 1}))
    for finished in (True, False):
        if not finished:
            os.remove(tmp_path / "done.json")
        with pytest.raises(run_dir.RunDirError, match=f"(?s)code behaviour version: {version.BEHAVIOUR_VERSION - 1} -> "
                           f"{version.BEHAVIOUR_VERSION}.*FORCE=1"):
            run_dir.previous_run(str(tmp_path), now)
    assert run_dir.previous_run(str(tmp_path), now, force=True) == run_dir.REPLACE
    (tmp_path / "log.txt").write_text("the old run's log\n")
    run_dir.start_over(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["log.txt"]  # logs kept, the run itself gone
    assert run_dir.previous_run(str(tmp_path), now) == run_dir.NEW


def test_runs_from_before_versions_are_reused_with_a_notice_and_never_resumed(tmp_path):
    now = {"OPTIM.MAX_EPOCH": 2, provenance.VERSION_KEY: version.BEHAVIOUR_VERSION, "CLIP weights": "sha256:a",
           "dataset files": {"split.json": "b"}}
    recorded_run(tmp_path, {"OPTIM.MAX_EPOCH": 2})  # what earlier code recorded: options only
    assert run_dir.previous_run(str(tmp_path), now) == run_dir.UNVERSIONED
    assert "version unknown" in run_dir.unversioned_notice(str(tmp_path))
    with pytest.raises(run_dir.RunDirError, match="OPTIM.MAX_EPOCH: 2 -> 3"):  # options still count
        run_dir.previous_run(str(tmp_path), dict(now, **{"OPTIM.MAX_EPOCH": 3}))
    assert run_dir.previous_run(str(tmp_path), now, force=True) == run_dir.REPLACE
    os.remove(tmp_path / "done.json")
    with pytest.raises(run_dir.RunDirError, match="(?s)interrupted run.*unknown .* only resumed by the code that"):
        run_dir.previous_run(str(tmp_path), now)


def test_changed_weights_or_dataset_files_refuse_a_finished_run(tmp_path):
    now = {provenance.VERSION_KEY: version.BEHAVIOUR_VERSION, "CLIP weights": "sha256:a",
           "dataset files": {"split_zhou_EuroSAT.json": "b"}}
    recorded_run(tmp_path, now)
    assert run_dir.previous_run(str(tmp_path), now) == run_dir.FINISHED
    with pytest.raises(run_dir.RunDirError, match="CLIP weights: 'sha256:a' -> 'sha256:c'"):
        run_dir.previous_run(str(tmp_path), dict(now, **{"CLIP weights": "sha256:c"}))
    with pytest.raises(run_dir.RunDirError, match="dataset files"):
        run_dir.previous_run(str(tmp_path), dict(now, **{"dataset files": {"split_zhou_EuroSAT.json": "d"}}))


def default_cfg(trainer, clip_file, *opts):
    from dassl.config import get_cfg_default

    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.TRAINER.NAME = trainer
    cfg.MODEL.BACKBONE.NAME = "custom"
    cfg.MODEL.BACKBONE.PATH = clip_file
    cfg.DATALOADER.NUM_WORKERS = 8
    cfg.merge_from_list(list(opts))
    return cfg


@pytest.mark.parametrize("trainer,changed", [
    ("MaPLe", {"TRAINER.MAPLE.PROMPT_DEPTH": 2}),  # min of 2 text and 3 vision layers
    ("DePT_MaPLe", {"TRAINER.MAPLE.PROMPT_DEPTH": 2}),
    ("DPC_PromptSRC", {"TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION": 3, "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT": 2}),
    ("IVLP", {"TRAINER.IVLP.PROMPT_DEPTH_VISION": 3, "TRAINER.IVLP.PROMPT_DEPTH_TEXT": 2}),
    ("PromptKD", {"TRAINER.PROMPTKD.PROMPT_DEPTH_VISION": 3}),
    ("CoOp", {}),
])
def test_a_custom_clip_gets_its_input_size_and_prompt_depths_from_the_file(tmp_path, trainer, changed, monkeypatch):
    pytest.importorskip("dassl")
    import torch
    from tools.tiny_clip import build_tiny_clip

    clip_file = str(tmp_path / "clip.pt")
    state = build_tiny_clip(layers=2, image_size=48).state_dict()  # + a third vision block, as the toy CLIP's
    for key in [k for k in state if k.startswith("visual.transformer.resblocks.1.")]:
        state[key.replace("resblocks.1.", "resblocks.2.")] = state[key].clone()
    torch.save(state, clip_file)
    monkeypatch.setattr(fit_clip, "usable_cpus", lambda: 2)
    cfg = default_cfg(trainer, clip_file)
    before = run_dir.flat_settings(cfg)
    notes = fit_clip.fit(cfg)
    after = run_dir.flat_settings(cfg)
    expected = dict(changed, **{"INPUT.SIZE": [48, 48], "DATALOADER.NUM_WORKERS": 2})
    assert {k: v for k, v in after.items() if before[k] != v} == expected
    assert notes[0] == "note: DATALOADER.NUM_WORKERS 8 -> 2 (the CPUs this process may use)"
    assert "ViT, 48 px, 3 vision and 2 text layers" in notes[1] and "INPUT.SIZE (224, 224) -> (48, 48)" in notes[1]
    kept = default_cfg(trainer, clip_file, "MODEL.BACKBONE.FIT_CUSTOM", "False")
    fit_clip.fit(kept)
    assert tuple(kept.INPUT.SIZE) == (224, 224)  # as given
    named = default_cfg(trainer, clip_file, "MODEL.BACKBONE.NAME", "ViT-B/16")
    fit_clip.fit(named)
    assert tuple(named.INPUT.SIZE) == (224, 224)  # OpenAI's models are never changed: a mismatch stays an error


def test_errors_of_ours_are_one_line_and_others_keep_their_traceback(capsys):
    from trainers import console

    def bad_option(_):
        raise ConfigError("DPC.W_BASE must be in (0, 1], got 1.5:\n  - set it to 0.2\n  - or 1.0")

    assert console.exit_on_user_error(bad_option, None, verbose=False) == 2
    err = capsys.readouterr().err
    assert err == ("error: DPC.W_BASE must be in (0, 1], got 1.5: set it to 0.2; or 1.0 "
                   "(traceback: DPC_VERBOSE=1, or train.py --verbose)\n")
    assert console.exit_on_user_error(bad_option, None, verbose=True) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and err.endswith("set it to 0.2; or 1.0\n")

    def bug(_):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        console.exit_on_user_error(bug, None, verbose=False)
    assert issubclass(ConfigError, ValueError) and issubclass(ConfigError, UserError)
    assert one_line(UserError("a\nb")) == "a; b"


def test_train_py_refuses_a_bad_option_in_one_line_with_status_2(tmp_path):
    cmd = [sys.executable, "train.py", "--output-dir", str(tmp_path / "out"), "--trainer", "CoOp",
           "--config-file", "configs/trainers/CoOp/vit_b16_c4_ep20_batch32_lr35.yaml", "DPC.W_BAS", "0.5"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert re.fullmatch(r"error: bad option on the command line: .*DPC\.W_BAS.* "
                        r"\(traceback: DPC_VERBOSE=1, or train.py --verbose\)\n", proc.stderr), proc.stderr
    proc = subprocess.run(cmd[:2] + ["--verbose"] + cmd[2:], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback (most recent call last)" in proc.stderr
