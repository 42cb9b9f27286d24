"""End to end with real Dassl: train.py, the experiment scripts and parse_test_res.py on synthetic data (CPU)."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("dassl")

from tests.conftest import ROOT  # noqa: E402
from tools.run_results import log_files, read_accuracy  # noqa: E402
from tools.synthetic_data import make_dataset  # noqa: E402
from tools.tiny_clip import save_tiny_clip  # noqa: E402

SHOTS = 4
TINY = ["INPUT.SIZE", "(32,32)", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TEST.BATCH_SIZE", "16",
        "OPTIM.MAX_EPOCH", "2", "TRAIN.PRINT_FREQ", "2"]
SMALL_K = ["DPC.TOPK", "3"]  # the synthetic datasets have 5 base classes; the scripts pick K = 5 for EuroSAT


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    make_dataset(str(root / "data"), "eurosat", n_classes=10, train_per_class=6)
    make_dataset(str(root / "data"), "dtd", n_classes=10, train_per_class=6)
    clip_file = save_tiny_clip(str(root / "tiny.pt"))
    env = dict(os.environ, DATA_ROOT=str(root / "data"), OUTPUT_ROOT=str(root / "output"),
               SHOTS=str(SHOTS), PYTHON=sys.executable)
    return {"root": root, "env": env, "opts": ["MODEL.BACKBONE.NAME", "custom", "MODEL.BACKBONE.PATH", clip_file] + TINY}


def run(cmd, workspace, check=True):
    proc = subprocess.run(cmd, cwd=ROOT, env=workspace["env"], capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def train_py(workspace, *args, opts=(), dataset="eurosat", check=True):
    """train.py with the CLI flags ``args``; ``opts`` (yacs) come last so they override the tiny settings."""
    cmd = [sys.executable, "train.py", "--root", workspace["env"]["DATA_ROOT"], "--seed", "1",
           "--dataset-config-file", f"configs/datasets/{dataset}.yaml", *args]
    return run(cmd + ["DATASET.NUM_SHOTS", str(SHOTS)] + workspace["opts"] + SMALL_K + list(opts), workspace, check)


def logs(out):
    """Everything train.py logged in ``out`` (log.txt and the log.txt-<time> of later runs), "" if none."""
    return "".join(Path(path).read_text() for path in log_files(str(out)))


def build_trainer_for(workspace, trainer, config, out, *opts, dataset="eurosat"):
    """A Dassl trainer built in this process from train.py's command line (tiny settings, then ``opts``)."""
    import train

    args = train.parse_args([
        "--root", workspace["env"]["DATA_ROOT"], "--seed", "1", "--trainer", trainer,
        "--dataset-config-file", os.path.join(ROOT, f"configs/datasets/{dataset}.yaml"),
        "--config-file", os.path.join(ROOT, config), "--output-dir", str(out), "DATASET.NUM_SHOTS", str(SHOTS),
        *workspace["opts"], *opts])
    return train.build(train.setup_cfg(args))


def run_dir(workspace, kind, trainer, cfg, dataset="eurosat", seed=1):
    return workspace["root"] / "output" / "base2new" / kind / dataset / f"shots_{SHOTS}" / trainer / cfg / f"seed{seed}"


COOP_CFG = "vit_b16_c4_ep20_batch32_lr35"
DPC_CFG = "vit_b16_c4_ep20_batch4_lr35_top8"


@pytest.fixture(scope="module")
def dpc_pipeline(workspace):
    """One command: stage 1, stage 2, base and new tests."""
    proc = run(["bash", "scripts/dpc/base2new_train.sh", "eurosat", "1", "coop"] + workspace["opts"], workspace)
    return proc.stdout + proc.stderr


def test_one_command_runs_both_stages_and_both_tests(workspace, dpc_pipeline):
    for trainer, cfg, batch in (("CoOp", COOP_CFG, 32), ("DPC_CoOp", DPC_CFG, 4)):
        train = run_dir(workspace, "train_base", trainer, cfg)
        test = run_dir(workspace, "test_new", trainer, cfg)
        assert (train / "prompt_learner" / "model.pth.tar-2").is_file()
        assert read_accuracy(str(train)) is not None and read_accuracy(str(test)) is not None
        info = json.loads((train / "run_info.json").read_text())
        assert info["config"]["TRAINER"]["NAME"] == trainer and "torch" in info["versions"]
        assert info["config"]["DATALOADER"]["TRAIN_X"]["BATCH_SIZE"] == batch and info["config"]["OPTIM"]["LR"] == 0.0035
    stage1 = run_dir(workspace, "train_base", "CoOp", COOP_CFG)
    provenance = json.loads((run_dir(workspace, "train_base", "DPC_CoOp", DPC_CFG) / "dpc_stage1.json").read_text())
    assert provenance["dir"] == str(stage1) and provenance["epoch"] == 2


def test_stage2_checkpoint_records_its_provenance(workspace, dpc_pipeline):
    ckpt = torch.load(run_dir(workspace, "train_base", "DPC_CoOp", DPC_CFG) / "prompt_learner" / "model.pth.tar-2",
                      map_location="cpu", weights_only=False)
    meta = ckpt["dpc"]
    assert meta["stage1"]["dir"] == str(run_dir(workspace, "train_base", "CoOp", COOP_CFG))
    assert meta["stage1"]["epoch"] == 2 and meta["w_base"] == 0.2 and meta["topk"] == 5  # EuroSAT: K = 5
    assert meta["update"] == "release" and ckpt["state_dict"]["parametrizations.ctx.0._extra_state"][1] == 0
    assert meta["classnames"] == ckpt["classnames"] and len(meta["classnames"]) == 5
    assert set(ckpt["state_dict"]) == {"parametrizations.ctx.original", "parametrizations.ctx.0.stage1",
                                       "parametrizations.ctx.0._extra_state"}
    stage1 = torch.load(run_dir(workspace, "train_base", "CoOp", COOP_CFG) / "prompt_learner" / "model.pth.tar-2",
                        map_location="cpu", weights_only=False)
    assert list(stage1["state_dict"]) == ["ctx"]  # no class-dependent buffers
    assert torch.equal(ckpt["state_dict"]["parametrizations.ctx.0.stage1"], stage1["state_dict"]["ctx"])


def test_new_class_accuracy_is_the_backbones(workspace, dpc_pipeline):
    """With w_n = 1e-6 the new-class prompt is the stage-1 prompt up to 1e-6 of the learned change."""
    backbone = read_accuracy(str(run_dir(workspace, "test_new", "CoOp", COOP_CFG)))
    assert read_accuracy(str(run_dir(workspace, "test_new", "DPC_CoOp", DPC_CFG))) == pytest.approx(backbone)


def test_finished_runs_are_skipped(workspace, dpc_pipeline):
    proc = run(["bash", "scripts/dpc/base2new_train.sh", "eurosat", "1", "coop"] + workspace["opts"], workspace)
    assert proc.stdout.count("(skipped") == 4
    # a finished DPC run is not reused for another stage 1 (here: another stage-1 config)
    other = workspace["root"] / "other_stage1.yaml"
    other.write_text((Path(ROOT) / "configs/trainers/CoOp" / f"{COOP_CFG}.yaml").read_text())
    env = dict(workspace["env"], STAGE1_CONFIG=str(other))
    proc = run(["bash", "scripts/dpc/base2new_train.sh", "eurosat", "1", "coop"] + workspace["opts"],
               dict(workspace, env=env), check=False)
    assert proc.returncode != 0 and "holds a finished run with other settings" in proc.stderr
    assert "DPC.STAGE1_DIR" in proc.stderr


def test_terminal_shows_stages_progress_and_results_and_the_log_has_the_rest(workspace, dpc_pipeline):
    printed = dpc_pipeline
    for trainer in ("CoOp", "DPC_CoOp"):
        assert f"[train] {trainer} on EuroSAT: base classes, {SHOTS} shots, seed 1" in printed
        assert f"[eval] {trainer} on EuroSAT: new classes, {SHOTS} shots, seed 1" in printed
    for kind in ("train_base", "test_new"):
        assert f"output {run_dir(workspace, kind, 'DPC_CoOp', DPC_CFG)} " in printed
    # training bars count epochs x batches (CoOp: 2 x 1, DPC: 2 x 5) and show an ETA; one eval bar per test
    assert re.search(r"train: 100%\|.*\| 2/2 \[.*ETA .*epoch 2/2", printed)
    assert re.search(r"train: 100%\|.*\| 10/10 \[.*ETA .*epoch 2/2", printed)
    assert len(re.findall(r"eval: 100%\|.*ETA", printed)) == 4 and printed.count("* accuracy: ") == 4
    for noise in ("** System info **", "PyTorch version", "Collecting env info", "epoch [", "Building",
                  "Warning", "pkg_resources"):
        assert noise not in printed
    for kind in ("train_base", "test_new"):
        for trainer, cfg in (("CoOp", COOP_CFG), ("DPC_CoOp", DPC_CFG)):
            log = (run_dir(workspace, kind, trainer, cfg) / "log.txt").read_text()
            assert "** System info **" in log and "PyTorch version" in log and "Building" in log
            assert "* accuracy: " in log and ("epoch [2/2]" in log) == (kind == "train_base")


@pytest.mark.parametrize("how", ["--verbose", "DPC_VERBOSE=1"])
def test_verbose_prints_the_whole_log(workspace, how):
    if how == "--verbose":
        out = workspace["root"] / "verbose"
        proc = train_py(workspace, "--verbose", "--trainer", "CoOp", "--config-file",
                        f"configs/trainers/CoOp/{COOP_CFG}.yaml", "--output-dir", str(out),
                        "DATASET.SUBSAMPLE_CLASSES", "base")
    else:  # through a script
        env = dict(workspace["env"], OUTPUT_ROOT=str(workspace["root"] / "verbose_env"), DPC_VERBOSE="1")
        proc = run(["bash", "scripts/coop/base2new_train.sh", "eurosat", "1"] + workspace["opts"],
                   dict(workspace, env=env))
        out = workspace["root"] / "verbose_env" / "base2new" / "train_base" / "eurosat" / f"shots_{SHOTS}" / "CoOp" \
            / COOP_CFG / "seed1"
    log = (out / "log.txt").read_text()
    assert "** System info **" in log and "epoch [2/2]" in log and "* accuracy: " in log
    assert log in proc.stdout  # every logged line reached the terminal too
    assert "train: " not in proc.stdout  # Dassl's own progress lines instead of our bar


def test_side_by_side_table(workspace, dpc_pipeline):
    proc = run([sys.executable, "tools/parse_test_res.py", "--base2new", str(workspace["root"] / "output" / "base2new"),
                "--dataset", "eurosat", "--shots", str(SHOTS)], workspace)
    lines = proc.stdout.splitlines()
    assert any("| CoOp " in line for line in lines) and any("| DPC_CoOp " in line for line in lines)
    assert any("DPC_CoOp - CoOp" in line for line in lines)


def test_new_class_weight_sweep_without_retraining(workspace, dpc_pipeline):
    """w_n = 0 reproduces the stage-1 model on the new classes; the sweep needs no retraining."""
    model_dir = run_dir(workspace, "train_base", "DPC_CoOp", DPC_CFG)
    out = workspace["root"] / "sweep"
    train_py(workspace, "--trainer", "DPC_CoOp", "--config-file", f"configs/trainers/DPC/CoOp/{DPC_CFG}.yaml",
             "--output-dir", str(out), "--model-dir", str(model_dir), "--load-epoch", "2", "--eval-only",
             "DATASET.SUBSAMPLE_CLASSES", "new", "DPC.SWEEP_W_NEW", "[0.0, 1e-6, 1.0]")
    rows = json.loads((out / "dpc_weight_sweep.json").read_text())
    assert [r["w_new"] for r in rows] == [0.0, 1e-6, 1.0] and all(r["mode"] == "new" for r in rows)
    stage1_new = read_accuracy(str(run_dir(workspace, "test_new", "CoOp", COOP_CFG)))
    assert rows[0]["accuracy"] == pytest.approx(stage1_new)
    dpc_new = read_accuracy(str(run_dir(workspace, "test_new", "DPC_CoOp", DPC_CFG)))
    assert read_accuracy(str(out)) == pytest.approx(dpc_new)  # the configured weights are evaluated last


@pytest.mark.parametrize("trainer", ["CoOp", "DPC_CoOp"])
def test_interrupted_run_resumes(workspace, dpc_pipeline, trainer):
    out = workspace["root"] / f"resume_{trainer}"
    config = f"configs/trainers/CoOp/{COOP_CFG}.yaml" if trainer == "CoOp" else f"configs/trainers/DPC/CoOp/{DPC_CFG}.yaml"
    args = ["--trainer", trainer, "--config-file", config, "--output-dir", str(out), "DATASET.SUBSAMPLE_CLASSES", "base"]
    if trainer == "DPC_CoOp":
        args += ["DPC.STAGE1_DIR", str(run_dir(workspace, "train_base", "CoOp", COOP_CFG))]
    train_py(workspace, *args)
    # emulate a run killed after epoch 1: the last checkpoint and the finish marker are gone
    (out / "prompt_learner" / "model.pth.tar-2").unlink()
    (out / "prompt_learner" / "checkpoint").write_text("model.pth.tar-1\n")
    (out / "done.json").unlink()
    proc = train_py(workspace, *args)
    log = Path(log_files(str(out))[-1]).read_text()  # this run's log: log.txt-<time>
    assert "will resume training" in log and "will resume training" in proc.stdout
    assert "epoch [1/2]" not in log and "epoch [2/2]" in log
    batches = {"CoOp": 1, "DPC_CoOp": 5}[trainer]  # per epoch: 20 images at batch 32 / batch 4
    assert re.search(rf"train: 100%\|.*\| {batches}/{batches} \[", proc.stdout)  # the bar counts the rest only
    assert len(list(out.glob("run_info*.json"))) == 2  # the first invocation's record is kept
    assert (out / "prompt_learner" / "model.pth.tar-2").is_file() and (out / "done.json").is_file()
    resumed = torch.load(out / "prompt_learner" / "model.pth.tar-2", map_location="cpu", weights_only=False)
    assert resumed["epoch"] == 2
    if trainer == "DPC_CoOp":  # the frozen stage-1 copy survived; the dual kept training
        stage1 = torch.load(run_dir(workspace, "train_base", "CoOp", COOP_CFG) / "prompt_learner" / "model.pth.tar-2",
                            map_location="cpu", weights_only=False)["state_dict"]["ctx"]
        state = resumed["state_dict"]
        assert torch.equal(state["parametrizations.ctx.0.stage1"], stage1)
        assert not torch.equal(state["parametrizations.ctx.original"], stage1)
        # resuming with another w_b is refused before any step
        (out / "done.json").unlink()
        proc = train_py(workspace, *args, opts=["DPC.W_BASE", "0.5"], check=False)
        assert proc.returncode != 0 and "holds an interrupted run with other settings" in proc.stderr
        assert "DPC.W_BASE: 0.2 -> 0.5" in proc.stderr


def dpc_stage2(workspace, *opts, dataset="eurosat", stage1=None):
    """A stage-2 run expected to fail, in a fresh output dir: (process, what it printed and logged)."""
    stage1 = stage1 or run_dir(workspace, "train_base", "CoOp", COOP_CFG)
    out = tempfile.mkdtemp(prefix="bad_", dir=workspace["root"])
    proc = train_py(workspace, "--trainer", "DPC_CoOp", "--config-file", f"configs/trainers/DPC/CoOp/{DPC_CFG}.yaml",
                    "--output-dir", out, "DATASET.SUBSAMPLE_CLASSES", "base",
                    "DPC.STAGE1_DIR", str(stage1), opts=opts, dataset=dataset, check=False)
    return proc, proc.stdout + logs(out)


def build_stage2(workspace, *opts, dataset="eurosat", stage1=None):
    """A DPC_CoOp stage-2 trainer built in this process (where bad input must already fail)."""
    stage1 = stage1 or run_dir(workspace, "train_base", "CoOp", COOP_CFG)
    out = tempfile.mkdtemp(prefix="bad_", dir=workspace["root"])
    return build_trainer_for(workspace, "DPC_CoOp", f"configs/trainers/DPC/CoOp/{DPC_CFG}.yaml", out,
                             "DATASET.SUBSAMPLE_CLASSES", "base", "DPC.STAGE1_DIR", str(stage1), *SMALL_K, *opts,
                             dataset=dataset)


def test_bad_input_stops_train_py_before_training(workspace, dpc_pipeline):
    proc, printed = dpc_stage2(workspace, "DPC.W_BASE", "0.0")
    assert proc.returncode != 0
    assert "DPC.W_BASE must be in (0, 1]" in proc.stderr
    assert "epoch [" not in printed


@pytest.mark.parametrize("opts, message", [
    (["DPC.W_BASE", "0.0"], "DPC.W_BASE must be in (0, 1]"),
    (["DPC.W_NEW", "1.5"], "DPC.W_NEW must be in [0, 1]"),
    (["DPC.TOPK", "6"], "DPC.TOPK=6 must be between 1 and the number of base classes (5)"),
    (["DPC.NEG_SOURCE", "web"], "DPC.NEG_SOURCE must be one of"),
    (["TRAINER.COOP.CTX_INIT", "", "TRAINER.COOP.N_CTX", "8"], "has shape (4, 64) in the checkpoint but (8, 64)"),
])
def test_bad_input_is_rejected_when_the_trainer_is_built(workspace, dpc_pipeline, opts, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_stage2(workspace, *opts)


def test_missing_stage1_names_the_path_and_the_command(workspace):
    with pytest.raises(FileNotFoundError) as err:
        build_stage2(workspace, stage1=workspace["root"] / "nowhere")
    expected = str(workspace["root"] / "nowhere" / "prompt_learner" / "model-best.pth.tar")
    assert f"DPC stage-1 checkpoint not found: {expected}" in str(err.value)
    assert "bash scripts/coop/base2new_train.sh <dataset> 1" in str(err.value)


def test_stage1_from_other_classes_is_rejected(workspace, dpc_pipeline):
    with pytest.raises(ValueError, match="other classes"):
        build_stage2(workspace, dataset="dtd")


def copy_of_stage1(workspace):
    copy = Path(tempfile.mkdtemp(prefix="stage1_", dir=workspace["root"])) / "run"
    shutil.copytree(run_dir(workspace, "train_base", "CoOp", COOP_CFG), copy)
    return copy


def test_an_unfinished_stage1_is_refused_by_name(workspace, dpc_pipeline):
    stage1 = copy_of_stage1(workspace)
    (stage1 / "done.json").unlink()  # as a stage 1 stopped after its first epoch leaves it (checkpoints, no done.json)
    proc, printed = dpc_stage2(workspace, stage1=stage1)
    assert proc.returncode == 2 and "epoch [" not in printed
    assert proc.stderr.startswith(f"error: the stage-1 run {stage1} has not finished (no done.json)")


@pytest.mark.parametrize("opts, mismatch", [
    (["DATASET.NUM_SHOTS", "2"], f"DATASET.NUM_SHOTS {SHOTS} in stage 1, 2 here"),
    (["SEED", "2"], "SEED 1 in stage 1, 2 here"),
])
def test_a_stage1_of_other_shots_or_seed_is_refused_unless_allowed(workspace, dpc_pipeline, opts, mismatch):
    stage1 = run_dir(workspace, "train_base", "CoOp", COOP_CFG)
    proc, printed = dpc_stage2(workspace, *opts)
    assert proc.returncode == 2 and "epoch [" not in printed
    assert f"the stage-1 run {stage1} was trained on another few-shot sample ({mismatch})" in proc.stderr
    assert "DPC.ALLOW_STAGE1_MISMATCH True if the mismatch is wanted" in proc.stderr
    import train
    from trainers.stage1_run import check_stage1_run

    args = ["--root", workspace["env"]["DATA_ROOT"], "--seed", "1", "--trainer", "DPC_CoOp", "--dataset-config-file",
            f"{ROOT}/configs/datasets/eurosat.yaml", "DATASET.NUM_SHOTS", str(SHOTS), "DPC.STAGE1_DIR", str(stage1)]
    assert check_stage1_run(train.setup_cfg(train.parse_args(args))) == []
    allowed = train.setup_cfg(train.parse_args(args + opts + ["DPC.ALLOW_STAGE1_MISMATCH", "True"]))
    assert check_stage1_run(allowed) == [f"Warning: the stage-1 run {stage1} was trained on another few-shot sample "
                                         f"({mismatch}) (DPC.ALLOW_STAGE1_MISMATCH True)"]


def test_stage1_checkpoint_cannot_be_evaluated_as_dpc(workspace, dpc_pipeline):
    proc = train_py(workspace, "--trainer", "DPC_CoOp", "--config-file", f"configs/trainers/DPC/CoOp/{DPC_CFG}.yaml",
                    "--output-dir", str(workspace["root"] / "bad_eval"), "--eval-only", "--load-epoch", "2",
                    "--model-dir", str(run_dir(workspace, "train_base", "CoOp", COOP_CFG)),
                    "DATASET.SUBSAMPLE_CLASSES", "new", check=False)
    assert proc.returncode != 0 and "not a DPC stage-2 checkpoint" in proc.stderr


@pytest.mark.parametrize("backbone, trainer, cfg, dpc_cfg", [
    ("maple", "MaPLe", "vit_b16_c2_ep20_batch32_2ctx", "vit_b16_c2_ep20_batch4_2ctx_top8"),
    ("promptsrc", "PromptSRC", "vit_b16_c2_ep20_batch32_4+4ctx", "vit_b16_c2_ep20_batch4_4+4ctx_top8"),
])
def test_one_command_pipeline_for_deep_prompt_backbones(workspace, backbone, trainer, cfg, dpc_cfg):
    opts = SMALL_K + ["TRAINER.MAPLE.PROMPT_DEPTH", "3", "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "3",
            "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "3", "TRAINER.PROMPTSRC.GPA_MEAN", "2",
            "TRAINER.PROMPTSRC.GPA_STD", "1"]
    run(["bash", "scripts/dpc/base2new_train.sh", "dtd", "1", backbone] + workspace["opts"] + opts, workspace)
    settings = {}
    for name, config in ((trainer, cfg), (f"DPC_{trainer}", dpc_cfg)):
        assert read_accuracy(str(run_dir(workspace, "train_base", name, config, dataset="dtd"))) is not None
        used = json.loads((run_dir(workspace, "train_base", name, config, dataset="dtd") / "run_info.json").read_text())
        settings[name] = (used["config"]["DATALOADER"]["TRAIN_X"]["BATCH_SIZE"], used["config"]["OPTIM"]["LR"])
        assert read_accuracy(str(run_dir(workspace, "test_new", name, config, dataset="dtd"))) is not None
    lr = {"MaPLe": 0.005, "PromptSRC": 0.0025}[trainer]  # the paper's settings: stage 1 at batch 32, DPC at 4
    assert settings == {trainer: (32, lr), f"DPC_{trainer}": (4, lr)}
    ckpt = torch.load(run_dir(workspace, "train_base", f"DPC_{trainer}", dpc_cfg, dataset="dtd") / "prompt_learner"
                      / "model.pth.tar-2", map_location="cpu", weights_only=False)
    assert ckpt["dpc"]["backbone"] == trainer
    assert ckpt["dpc"]["w_base"] == (1.0 if trainer == "MaPLe" else 0.2) and ckpt["dpc"]["update"] == "release"
    assert ckpt["dpc"]["parallel_loss"] is True
    wrapped = ckpt["dpc"]["prompt_tensors"]["prompt_learner"]
    assert len(wrapped) > 3  # text, vision / coupling and deep prompts all have duals
    assert all(f"parametrizations.{n.rsplit('.', 1)[-1]}.original" in "".join(ckpt["state_dict"]) for n in wrapped)
    table = run([sys.executable, "tools/parse_test_res.py", "--base2new",
                 str(workspace["root"] / "output" / "base2new"), "--dataset", "dtd"], workspace).stdout
    assert f"| DPC_{trainer} " in table and f"DPC_{trainer} - {trainer}" in table


def test_coop_scripts_train_and_test(workspace):
    env = dict(workspace["env"], OUTPUT_ROOT=str(workspace["root"] / "coop_scripts"))
    ws = dict(workspace, env=env)
    run(["bash", "scripts/coop/base2new_train.sh", "eurosat", "2"] + workspace["opts"], ws)
    run(["bash", "scripts/coop/base2new_test.sh", "eurosat", "2"] + workspace["opts"], ws)
    base = workspace["root"] / "coop_scripts" / "base2new" / "train_base" / "eurosat" / f"shots_{SHOTS}" / "CoOp"
    new = workspace["root"] / "coop_scripts" / "base2new" / "test_new" / "eurosat" / f"shots_{SHOTS}" / "CoOp"
    assert read_accuracy(str(base / COOP_CFG / "seed2")) is not None
    assert read_accuracy(str(new / COOP_CFG / "seed2")) is not None
    log = (new / COOP_CFG / "seed2" / "log.txt").read_text()
    assert "# classes  5" in log  # evaluated on the 5 new classes
    proc = run(["bash", "scripts/coop/base2new_test.sh", "eurosat", "3"] + workspace["opts"], ws, check=False)
    assert proc.returncode != 0 and "run (or let finish) the matching base2new_train.sh first" in proc.stderr
    (base / COOP_CFG / "seed2" / "done.json").unlink()  # an interrupted run is not tested either
    proc = run(["bash", "scripts/coop/base2new_test.sh", "eurosat", "2"] + workspace["opts"], dict(ws, env=dict(
        env, FORCE="1")), check=False)
    assert proc.returncode != 0 and "no finished training run" in proc.stderr
    proc = run(["bash", "scripts/dpc/base2new_train.sh", "eurosat", "2", "mapel"], ws, check=False)
    assert proc.returncode != 0 and "unknown backbone 'mapel'" in proc.stderr


@pytest.mark.parametrize("source", ["few-shot", "full-train"])
def test_negative_images_come_from_the_chosen_source(workspace, dpc_pipeline, source):
    stage1 = run_dir(workspace, "train_base", "CoOp", COOP_CFG)
    trainer = build_trainer_for(workspace, "DPC_CoOp", f"configs/trainers/DPC/CoOp/{DPC_CFG}.yaml",
                                workspace["root"] / f"source_{source}", "DATASET.SUBSAMPLE_CLASSES", "base",
                                "DPC.STAGE1_DIR", str(stage1), "DPC.NEG_SOURCE", source, *SMALL_K)
    dataset = trainer.dm.dataset
    allowed = dataset.train_x if source == "few-shot" else dataset.full_train
    assert sorted(trainer.dpc_bank.impaths) == sorted(item.impath for item in allowed)
    assert len(trainer.dpc_bank) == (5 * SHOTS if source == "few-shot" else 5 * 6)
    base_names = set(dataset.classnames)
    assert {item.classname for item in allowed} == base_names and len(base_names) == 5


def test_stage2_is_deterministic_for_a_seed(workspace, dpc_pipeline):
    states = []
    for name in ("det_a", "det_b"):
        out = workspace["root"] / name
        train_py(workspace, "--trainer", "DPC_CoOp", "--config-file", f"configs/trainers/DPC/CoOp/{DPC_CFG}.yaml",
                 "--output-dir", str(out), "DATASET.SUBSAMPLE_CLASSES", "base",
                 "DPC.STAGE1_DIR", str(run_dir(workspace, "train_base", "CoOp", COOP_CFG)))
        states.append(torch.load(out / "prompt_learner" / "model.pth.tar-2", map_location="cpu",
                                 weights_only=False)["state_dict"])
    assert states[0].keys() == states[1].keys()
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]) if torch.is_tensor(value) else value == states[1][key], key
    assert not torch.equal(states[0]["parametrizations.ctx.original"], states[0]["parametrizations.ctx.0.stage1"])


def test_backbone_losses_can_be_added_in_parallel(workspace, dpc_pipeline):
    trainer = build_trainer_for(workspace, "DPC_CoOp", f"configs/trainers/DPC/CoOp/{DPC_CFG}.yaml",
                                workspace["root"] / "extra_loss", "DATASET.SUBSAMPLE_CLASSES", "base",
                                "DPC.STAGE1_DIR", str(run_dir(workspace, "train_base", "CoOp", COOP_CFG)), *SMALL_K)
    trainer.before_train()
    batch = next(iter(trainer.train_loader_x))
    plain, logged = dpc_loss_once(trainer, batch)
    assert set(logged) == {"loss_cl", "pairs"} and plain == logged["loss_cl"]  # CoOp has no terms of its own
    trainer.dpc_extra_loss = lambda images, labels, image_features, text_features: images.new_tensor(5.0)
    total, logged = dpc_loss_once(trainer, batch)
    assert total == pytest.approx(plain + 5.0) and logged["extra"] == 5.0
    trainer.close_writer()


def test_cross_entropy_objective_is_the_backbones_loss_on_the_anchors(workspace, dpc_pipeline):
    """Table 3's rows without the hard-negative optimizer: the anchors' CE over all base classes under P' (at the
    start P' = P, so it is stage-1 CoOp's own loss), no negatives."""
    stage1 = run_dir(workspace, "train_base", "CoOp", COOP_CFG)
    trainer = build_trainer_for(workspace, "DPC_CoOp", f"configs/trainers/DPC/CoOp/{DPC_CFG}.yaml",
                                workspace["root"] / "ce_objective", "DATASET.SUBSAMPLE_CLASSES", "base",
                                "DPC.STAGE1_DIR", str(stage1), "DPC.OBJECTIVE", "cross-entropy", *SMALL_K)
    trainer.before_train()
    trainer.set_model_mode("train")
    batch = next(iter(trainer.train_loader_x))
    loss, logged = trainer.dpc_loss(batch["img"], batch["label"])
    coop = build_trainer_for(workspace, "CoOp", f"configs/trainers/CoOp/{COOP_CFG}.yaml", workspace["root"] / "ce_coop",
                             "DATASET.SUBSAMPLE_CLASSES", "base")
    coop.load_model(str(stage1), epoch=2)
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(coop.model(batch["img"]), batch["label"])
    assert set(logged) == {"loss_ce"} and loss.requires_grad
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="OBJECTIVE"):
        build_trainer_for(workspace, "DPC_CoOp", f"configs/trainers/DPC/CoOp/{DPC_CFG}.yaml",
                          workspace["root"] / "bad_objective", "DPC.OBJECTIVE", "random", "DPC.STAGE1_DIR", str(stage1))
    trainer.close_writer()
    coop.close_writer()


def dpc_loss_once(trainer, batch):
    """One stage-2 loss with the sampler and the augmentations of the negatives reseeded: (loss, logged)."""
    import random

    trainer.dpc_sampler.rng = random.Random(0)
    torch.manual_seed(0)
    loss, logged = trainer.dpc_loss(batch["img"], batch["label"])
    return loss.item(), logged


PSRC_OPTS = ["TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "3", "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "3",
             "TRAINER.PROMPTSRC.GPA_MEAN", "2", "TRAINER.PROMPTSRC.GPA_STD", "1", "DATASET.SUBSAMPLE_CLASSES", "base"]


@pytest.mark.parametrize("parallel", [True, False])
def test_promptsrc_stage2_adds_its_self_regulating_terms_to_the_contrastive_loss(workspace, parallel):
    """Paper Sec. 3.3: L_CL in parallel with PromptSRC's L_SCL, computed on the anchors with P'."""
    from trainers.dpc import decoupling

    stage1_dir = workspace["root"] / f"psrc_stage1_{parallel}"
    stage1 = build_trainer_for(workspace, "PromptSRC", "configs/trainers/PromptSRC/vit_b16_c2_ep20_batch32_4+4ctx.yaml",
                               stage1_dir, *PSRC_OPTS)
    with torch.no_grad():  # a stage 1 that is not the initialisation
        for p in stage1.model.prompt_learner.parameters():
            p.add_(0.05 * torch.randn_like(p))
    stage1.save_model(0, str(stage1_dir))
    stage1.close_writer()
    trainer = build_trainer_for(
        workspace, "DPC_PromptSRC", "configs/trainers/DPC/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx_top8.yaml",
        workspace["root"] / f"psrc_stage2_{parallel}", *PSRC_OPTS, *SMALL_K, "DPC.STAGE1_DIR", str(stage1_dir),
        "DPC.STAGE1_EPOCH", "1", "DPC.PARALLEL_LOSS", str(parallel))
    trainer.before_train()
    trainer.set_model_mode("train")
    batch = next(iter(trainer.train_loader_x))
    total, logged = dpc_loss_once(trainer, batch)
    if not parallel:
        assert set(logged) == {"loss_cl", "pairs"} and total == logged["loss_cl"]
        return
    scl = {k: v for k, v in logged.items() if k.startswith("scl_")}
    assert set(scl) == {"scl_text", "scl_image", "scl_logits"} and all(v > 0 for v in scl.values())
    assert total == pytest.approx(logged["loss_cl"] + sum(scl.values()), rel=1e-6)
    net = trainer.dpc_net
    with torch.no_grad(), decoupling.mode(net, "train"):  # PromptSRC's own terms under P'
        images = batch["img"]
        expected = trainer.regularization_terms(images, net.encode_image(images), net.encode_text())
    for name, value in expected.items():
        assert scl[name] == pytest.approx(value.item(), rel=1e-5), name
    trainer.close_writer()


def test_trainer_loads_clip_for_its_own_device(workspace, monkeypatch):
    """The precision decision (fp16 on CUDA, fp32 elsewhere) is made for the trainer's device."""
    import trainers.base

    calls = []
    real = trainers.base.load_clip
    monkeypatch.setattr(trainers.base, "load_clip", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    trainer = build_trainer_for(workspace, "CoOp", f"configs/trainers/CoOp/{COOP_CFG}.yaml", workspace["root"] / "device")
    assert calls[0]["device"] == trainer.device and calls[0]["prec"] == trainer.prec == "fp32"


# ---------------------------------------------------------------- no silent wrong results
def test_a_run_directory_held_by_another_process_is_refused(workspace, dpc_pipeline):
    from trainers.run_dir import exclusive

    out = workspace["root"] / "held"
    with exclusive(str(out)):
        proc = train_py(workspace, "--trainer", "CoOp", "--config-file", f"configs/trainers/CoOp/{COOP_CFG}.yaml",
                        "--output-dir", str(out), check=False)
    assert proc.returncode != 0 and f"is in use by process {os.getpid()}" in proc.stderr
    assert not (out / "log.txt").exists()  # refused before anything was written


def test_changed_options_never_reuse_a_finished_run(workspace, dpc_pipeline):
    script = ["bash", "scripts/dpc/base2new_train.sh", "eurosat", "1", "coop"] + workspace["opts"]
    proc = run(script + ["OPTIM.MAX_EPOCH", "5", "DPC.W_BASE", "0.5", "DPC.TOPK", "3"], workspace, check=False)
    assert proc.returncode != 0 and "holds a finished run with other settings" in proc.stderr
    assert "OPTIM.MAX_EPOCH: 2 -> 5" in proc.stderr and "(skipped" not in proc.stdout
    proc = run(script + ["DPC.W_BASE", "0.5"], workspace, check=False)  # stage 1 does not read DPC options
    assert proc.returncode != 0 and proc.stdout.count("(skipped") == 1
    assert "DPC.W_BASE: 0.2 -> 0.5" in proc.stderr and "OPTIM" not in proc.stderr


@pytest.mark.parametrize("subsample", ["base", "new"])
def test_a_checkpoint_is_not_evaluated_on_another_datasets_classes(workspace, dpc_pipeline, subsample):
    for trainer, cfg in (("CoOp", f"CoOp/{COOP_CFG}"), ("DPC_CoOp", f"DPC/CoOp/{DPC_CFG}")):
        evaluator = build_trainer_for(workspace, trainer, f"configs/trainers/{cfg}.yaml",
                                      workspace["root"] / f"dtd_eval_{trainer}_{subsample}",
                                      "DATASET.SUBSAMPLE_CLASSES", subsample, dataset="dtd")
        with pytest.raises(ValueError, match="was trained on other classes"):
            evaluator.load_model(str(run_dir(workspace, "train_base", trainer, cfg.rsplit("/", 1)[1])), epoch=2)


def test_a_stage1_checkpoint_without_class_names_is_used_with_a_warning(workspace, dpc_pipeline):
    stage1 = workspace["root"] / "upstream_stage1"
    (stage1 / "prompt_learner").mkdir(parents=True)
    ckpt = torch.load(run_dir(workspace, "train_base", "CoOp", COOP_CFG) / "prompt_learner" / "model.pth.tar-2",
                      map_location="cpu", weights_only=False)
    torch.save({"state_dict": ckpt["state_dict"], "epoch": 2}, stage1 / "prompt_learner" / "model.pth.tar-2")
    proc, _ = dpc_stage2(workspace, "OPTIM.MAX_EPOCH", "1", stage1=stage1)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # a warning reaches the quiet terminal too
    assert "does not record the classes it was trained on; only its prompt shapes could be checked" in proc.stdout


def kill_after_checkpoint(cmd, env, out, epoch):
    """Start ``cmd`` and SIGKILL it as soon as the checkpoint of ``epoch`` exists (mid-run)."""
    import signal
    import time

    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    target = out / "prompt_learner" / f"model.pth.tar-{epoch}"
    deadline = time.monotonic() + 300
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.exists() and not (out / "done.json").exists(), proc.stderr.read()[-2000:]


@pytest.mark.parametrize("trainer", ["CoOp", "DPC_CoOp"])
def test_a_killed_run_resumes_bit_identical_to_an_uninterrupted_one(workspace, dpc_pipeline, trainer):
    config = f"configs/trainers/CoOp/{COOP_CFG}.yaml" if trainer == "CoOp" else f"configs/trainers/DPC/CoOp/{DPC_CFG}.yaml"
    finals = []
    for name in ("whole", "killed"):
        out = workspace["root"] / f"exact_{trainer}_{name}"
        args = ["--trainer", trainer, "--config-file", config, "--output-dir", str(out),
                "DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.MAX_EPOCH", "6"]
        if trainer == "DPC_CoOp":
            args += ["DPC.STAGE1_DIR", str(run_dir(workspace, "train_base", "CoOp", COOP_CFG)), "DPC.STAGE1_EPOCH", "2"]
        if name == "killed":
            cmd = [sys.executable, "train.py", "--root", workspace["env"]["DATA_ROOT"], "--seed", "1",
                   "--dataset-config-file", "configs/datasets/eurosat.yaml", *args, "DATASET.NUM_SHOTS", str(SHOTS),
                   *workspace["opts"], *SMALL_K, "OPTIM.MAX_EPOCH", "6"]
            kill_after_checkpoint(cmd, workspace["env"], out, epoch=2)
            proc = train_py(workspace, *args, opts=["OPTIM.MAX_EPOCH", "6"])
            assert "resuming the interrupted run" in proc.stdout
        else:
            train_py(workspace, *args, opts=["OPTIM.MAX_EPOCH", "6"])
        finals.append(torch.load(out / "prompt_learner" / "model.pth.tar-6", map_location="cpu", weights_only=False))
        finals[-1]["accuracy"] = json.loads((out / "done.json").read_text())["accuracy"]
    whole, killed = finals
    for key, value in whole["state_dict"].items():
        assert torch.equal(value, killed["state_dict"][key]) if torch.is_tensor(value) else value == killed["state_dict"][key], key
    momentum = lambda ckpt: [s["momentum_buffer"] for s in ckpt["optimizer"]["state"].values()]  # noqa: E731
    assert all(torch.equal(a, b) for a, b in zip(momentum(whole), momentum(killed)))
    assert whole["accuracy"] == killed["accuracy"]
