"""The paper's tables as sweeps (tools/experiments.py): the job grids, and one real grid run by concurrent workers."""
import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tools import experiments
from tools.run_results import read_accuracy

TINY = ["MODEL.BACKBONE.NAME", "custom", "INPUT.SIZE", "(32,32)", "DATALOADER.NUM_WORKERS", "0",
        "DATALOADER.TEST.BATCH_SIZE", "16", "OPTIM.MAX_EPOCH", "1", "TRAIN.PRINT_FREQ", "1"]


def by_name(jobs):
    return {job.name: job for job in jobs}


def test_shared_steps_are_one_job_and_stages_wait_for_their_inputs():
    jobs = by_name(experiments.build_jobs(["table1", "table3", "table4", "table5", "fig6"], ["dtd"], [1], ["coop"]))
    stage1 = [j for j in jobs.values() if dict(j.env).get("STEPS") == "stage1"]
    assert sorted(j.name for j in stage1) == ["coop/dtd/seed1/stage1", "coop/dtd/seed1/stage1@ep10",
                                              "coop/dtd/seed1/stage1@ep5"]  # Tables 1, 3, 4, Fig. 6 share one
    full = jobs["coop/dtd/seed1/dpc"]
    assert full.deps == ("coop/dtd/seed1/stage1",) and dict(full.env) == {"STEPS": "stage2 test"}
    row1 = dict(jobs["coop/dtd/seed1/dpc@t3-ts"].env)
    assert row1["DPC_TAG"] == "t3-ts" and "DPC.OBJECTIVE cross-entropy" in row1["DPC_EXTRA"]
    assert "DPC.W_NEW 1.0" in row1["DPC_EXTRA"] and "DPC.W_BASE 1.0" in row1["DPC_EXTRA"]
    assert dict(jobs["coop/dtd/seed1/dpc@t3-we-de"].env)["DPC_EXTRA"].count("W_") == 0  # w_b 0.2, w_n 1e-6 kept
    ep5 = jobs["coop/dtd/seed1/dpc@ep5"]
    assert ep5.deps == ("coop/dtd/seed1/stage1@ep5",)
    assert dict(ep5.env)["STAGE1_TAG"] == "ep5" and dict(ep5.env)["DPC_EXTRA"] == "OPTIM.MAX_EPOCH 5"
    sweep = jobs["coop/dtd/seed1/dpc@wn-sweep"]
    assert sweep.deps == (full.name,) and dict(sweep.env)["DPC_EVAL_EXTRA"].startswith("DPC.SWEEP_W_NEW [0.0,1e-06,")
    assert len([n for n in jobs if "@wb" in n]) == len(experiments.FIG6_W_BASE)
    assert dict(jobs["coop/dtd/seed1/dpc@wb1"].env)["DPC_EXTRA"] == "DPC.W_BASE 1.0"  # a float for yacs


def test_promptkd_teacher_is_one_job_per_dataset_before_every_seed():
    jobs = by_name(experiments.build_jobs(["table1"], ["dtd", "eurosat"], [1, 2, 3], ["coop", "promptkd"]))
    teachers = [n for n in jobs if n.endswith("/teacher")]
    assert sorted(teachers) == ["promptkd/dtd/teacher", "promptkd/eurosat/teacher"]
    for seed in (1, 2, 3):
        assert jobs[f"promptkd/dtd/seed{seed}/stage1"].deps == ("promptkd/dtd/teacher",)
    assert jobs["coop/dtd/seed2/stage1"].deps == ()
    assert len(jobs) == 2 + 2 * 2 * 3 * 2


def test_table2_trains_on_imagenet_once_and_tests_every_target_after_stage2():
    jobs = by_name(experiments.build_jobs(["table2"], experiments.DATASETS, [1], ["maple", "promptkd"]))
    tests = [j for j in jobs.values() if dict(j.env).get("STEPS") == "test" and j.name.startswith("maple")]
    assert sorted(dict(j.env)["TARGETS"] for j in tests) == sorted(experiments.TARGETS) and len(tests) == 14
    assert all(j.deps == ("maple/xd/seed1/dpc",) for j in tests)
    assert jobs["maple/xd/seed1/dpc"].deps == ("maple/xd/seed1/stage1",)
    assert jobs["promptkd/xd/seed1/stage1"].deps == ("promptkd/xd/teacher",)  # an ImageNet teacher first
    assert dict(jobs["promptkd/xd/teacher"].env) == {"STEPS": "teacher"}
    assert len([n for n in jobs if n.startswith("promptkd/xd/seed1/test/")]) == 14


def test_dry_run_lists_the_jobs(capsys):
    assert experiments.main(["fewshot", "--datasets", "dtd", "--seeds", "1", "--backbones", "coop", "--dry-run",
                             "--", "OPTIM.MAX_EPOCH", "2"]) == 0
    out = capsys.readouterr().out
    assert "10 jobs" in out and "SHOTS='4'" in out and "fewshot_train.sh dtd 1 coop OPTIM.MAX_EPOCH 2" in out


def test_table4_grid_runs_with_two_concurrent_workers_and_prints_the_table(tmp_path):
    """A real grid (8 train.py runs: stage 1, three stage-2 variants and their new-class tests) through the
    sweep command with 2 workers; the three stage-2 jobs all test the same CoOp run (one evaluates it, the
    others wait for its directory or find it finished), then the table is printed from the runs."""
    pytest.importorskip("dassl")
    from tools.synthetic_data import make_dataset
    from tools.tiny_clip import save_tiny_clip

    make_dataset(str(tmp_path / "data"), "eurosat", n_classes=10, train_per_class=4, val_per_class=1, test_per_class=2)
    clip = save_tiny_clip(str(tmp_path / "tiny.pt"))
    env = dict(os.environ, DATA_ROOT=str(tmp_path / "data"), OUTPUT_ROOT=str(tmp_path / "out"), SHOTS="4",
               PYTHON=sys.executable)
    proc = subprocess.run(["bash", "scripts/paper/table4.sh", "--datasets", "eurosat", "--seeds", "1", "--workers", "2",
                           "--", *TINY, "MODEL.BACKBONE.PATH", clip], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    b2n = tmp_path / "out" / "base2new"
    dpc = b2n / "train_base" / "eurosat" / "shots_4" / "DPC_CoOp"
    assert sorted(os.listdir(dpc)) == ["vit_b16_c4_ep20_batch4_lr35_top8", "vit_b16_c4_ep20_batch4_lr35_top8@b16k2",
                                       "vit_b16_c4_ep20_batch4_lr35_top8@b8k4"]
    runs = [root for root, _, files in os.walk(b2n) if "done.json" in files]
    assert len(runs) == 8 and all(read_accuracy(run) is not None for run in runs)
    command = json.loads((dpc / "vit_b16_c4_ep20_batch4_lr35_top8@b8k4" / "seed1" / "run_info.json").read_text())["command"]
    assert command.endswith("DATALOADER.TRAIN_X.BATCH_SIZE 8 DPC.TOPK 4")  # the row's options come last
    sweep = json.loads(next((tmp_path / "out" / "sweeps").glob("table4-*/sweep.json")).read_text())
    assert sweep["counts"]["done"] == 4 and all(job["status"] == "done" for job in sweep["jobs"])
    table = proc.stdout[proc.stdout.index("Table 4"):]
    for batch, k in ((4, 5), (8, 4), (16, 2)):  # EuroSAT's 5 base classes: the scripts' K is 5 for batch 4
        assert re.search(rf"^\s*{batch}\s+{k}\s+\d+\.\d+", table, re.M), table


def test_fig5_grid_is_table1s_jobs_plus_dept(tmp_path):
    """fig5.sh runs backbone, + DPC and + DePT: the first two are Table 1's very jobs (same names and commands, so
    Table 1's finished runs are reused), DePT's job runs scripts/dept. Printing and drawing Figs. 5 and 1 from a
    run tree: tests/test_paper_tables.py."""
    env = dict(os.environ, DATA_ROOT=str(tmp_path / "data"), OUTPUT_ROOT=str(tmp_path / "out"))

    def dry_run(script):
        proc = subprocess.run(["bash", f"scripts/paper/{script}", "--datasets", "eurosat", "dtd", "--seeds", "1",
                               "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in proc.stdout.splitlines()
                if re.match(r"^\w+/\w+/seed\d+/\w+:", line)}

    fig5, table1 = dry_run("fig5.sh"), dry_run("table1.sh")
    backbones = {name.split("/")[0] for name in fig5}
    assert backbones == {"coop", "maple", "promptsrc"}  # the backbones with a DePT version
    for name, command in fig5.items():
        if name.endswith("/dept"):
            assert command.startswith("bash scripts/dept/base2new_train.sh") and name.split("/")[1] in command
        else:
            assert table1[name] == command  # Table 1's job, reused
    assert len(fig5) == 3 * 2 * 3  # backbones x datasets x (stage 1, DPC, DePT)


def test_toyworld_study_runs_dept_on_coops_recipe_and_on_its_own_beside_dpc_and_the_ce_control(tmp_path):
    from bench import toyworld_study as study

    grid = study.study_grid("toyworld", [1, 2], ["ce", "dept", "dept-own"], str(tmp_path / "clip.pt"), str(tmp_path))
    jobs = by_name(grid.jobs)
    for seed in (1, 2):
        same = jobs[f"dept/toyworld/seed{seed}/dept"]
        assert same.argv[:5] == ("bash", "scripts/dept/base2new_train.sh", "toyworld", str(seed), "coop")
        assert dict(same.env) == {"DEPT_CONFIG": "configs/trainers/CoOp/vit_b16_c4_ep20_batch32_lr35.yaml"}
        assert os.path.isfile(os.path.join(ROOT, dict(same.env)["DEPT_CONFIG"]))
        assert dict(jobs[f"dept/toyworld/seed{seed}/dept-own"].env) == {}  # DePT_CoOp's own config
        assert "TRAINER.COOP.N_CTX" in same.argv and str(tmp_path / "clip.pt") in same.argv  # the ToyWorld options
        assert jobs[f"coop/toyworld/seed{seed}/dpc@ce"].deps == (f"coop/toyworld/seed{seed}/stage1",)
    # the table reads each DePT row from the cfg dir its config names
    assert study.dept_config("CoOp") == "vit_b16_c4_ep20_batch32_lr35" and study.dept_config("") == ""
