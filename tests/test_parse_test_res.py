"""Tests for tools/parse_test_res.py (and the run reading of tools/run_results.py) on hand-built run dirs with
Dassl-style logs."""

import csv
import io
import json
import math
import os
import subprocess
import sys

import pytest

from tools import parse_test_res as ptr
from tools import run_results as rr

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "tools", "parse_test_res.py")

COOP_CFG = "vit_b16_ep50"
DPC_CFG = "vit_b16_c4_ep20_batch4_lr35_top8"


# ----------------------------------------------------------------------------
# Fake Dassl output
# ----------------------------------------------------------------------------

def result_block(acc, total=1000, split="test"):
    """Text Dassl's evaluator prints for one evaluation (with a per-class part)."""
    correct = round(total * acc / 100)
    return (
        f"Evaluate on the *{split}* set\n"
        "100%|##########| 8/8 [00:03<00:00,  2.41it/s]\n"
        "=> result\n"
        f"* total: {total:,}\n"
        f"* correct: {correct:,}\n"
        f"* accuracy: {acc:.1f}%\n"
        f"* error: {100 - acc:.1f}%\n"
        f"* macro_f1: {max(acc - 0.3, 0):.1f}%\n"
        "=> per-class result\n"
        f"* class: 0 (AnnualCrop)\ttotal: 100\tcorrect: 99\tacc: 99.0%\n"
        f"* average: {acc + 0.4:.1f}%\n"
    )


def train_log(final, vals=(), header=True):
    """A training log: per-epoch val evaluations, then the final test."""
    text = ""
    if header:
        text += ("Setting fixed seed: 1\n** Config **\nDATASET:\n  NAME: EuroSAT\n"
                 "Loading trainer: CoOp\nLoading dataset: EuroSAT\n")
    for i, v in enumerate(vals):
        text += f"epoch [{i + 1}/{len(vals)}] batch [5/5] time 0.1 (0.2) loss 0.9 (1.0) acc 70.0 (65.0) lr 2.0e-03\n"
        text += result_block(v, split="val")
    if final is not None:
        text += "Finish training\nDeploy the last-epoch model\n" + result_block(final) + "Elapsed: 0:01:02\n"
    return text


def eval_log(*accs):
    """An eval-only log; several results (e.g. a DPC weight sweep), configured weights last."""
    text = "Loading weights to prompt_learner from \"output/.../model.pth.tar-20\" (epoch = 20)\n"
    for a in accs:
        text += result_block(a)
    return text


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def done(run_dir, acc, eval_only=False):
    write(os.path.join(run_dir, "done.json"), json.dumps(
        {"finished": "2025-03-01 12:00:00", "accuracy": acc, "eval_only": eval_only,
         "model_dir": None, "load_epoch": None}))


def make_run(run_dir, acc, new=False):
    """A finished run: log with the result and done.json agreeing with it."""
    text = eval_log(acc - 5.0, acc) if new else train_log(acc, vals=(acc - 10.0, acc + 3.0))
    write(os.path.join(run_dir, "log.txt"), text)
    done(run_dir, acc, eval_only=new)


# Base / new accuracies per (dataset, trainer) for seeds 1, 2, 3
TABLE = {
    ("eurosat", "CoOp"): ([80.0, 82.0, 84.0], [60.0, 62.0, 64.0]),
    ("eurosat", "DPC_CoOp"): ([85.0, 86.0, 87.0], [61.0, 62.0, 63.0]),
    ("dtd", "CoOp"): ([70.0, 70.0, 70.0], [50.0, 50.0, 50.0]),
    ("dtd", "DPC_CoOp"): ([74.0, 74.0, 74.0], [52.0, 52.0, 52.0]),
}


def cfg_of(trainer):
    return DPC_CFG if trainer.startswith("DPC_") else COOP_CFG


def cfg_dir(root, side, dataset, trainer, shots=16):
    return os.path.join(root, side, dataset, f"shots_{shots}", trainer, cfg_of(trainer))


@pytest.fixture
def b2n_root(tmp_path):
    """base2new tree: CoOp and DPC_CoOp on eurosat and dtd, seeds 1-3."""
    root = str(tmp_path / "base2new")
    for (ds, tr), (base, new) in TABLE.items():
        for seed, (b, n) in enumerate(zip(base, new), start=1):
            make_run(os.path.join(cfg_dir(root, "train_base", ds, tr), f"seed{seed}"), b)
            make_run(os.path.join(cfg_dir(root, "test_new", ds, tr), f"seed{seed}"), n, new=True)
    return root


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=REPO, capture_output=True, text=True,
                          env=None if env is None else {**os.environ, **env})


def std(xs):
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


# ----------------------------------------------------------------------------
# One run
# ----------------------------------------------------------------------------

def test_last_accuracy_of_log_wins(tmp_path):
    # val evaluations, then the final test; per-class "* average:" must not count
    write(str(tmp_path / "log.txt"), train_log(81.2, vals=(60.0, 75.5, 90.0)))
    done(str(tmp_path), 81.2345)  # finished; the log's line wins, as upstream CoOp reads it
    assert rr.parse_log(str(tmp_path / "log.txt")) == pytest.approx(81.2)
    assert rr.read_accuracy(str(tmp_path)) == pytest.approx(81.2)


def test_weight_sweep_configured_weights_last(tmp_path):
    write(str(tmp_path / "log.txt"), eval_log(70.1, 90.3, 55.0, 64.7))
    done(str(tmp_path), 64.6875)
    assert rr.read_accuracy(str(tmp_path)) == pytest.approx(64.7)


def test_resumed_run_newest_log_wins(tmp_path):
    run = str(tmp_path)
    write(os.path.join(run, "log.txt"), train_log(70.0))
    write(os.path.join(run, "log.txt-2025-01-02-10-00-00"), train_log(75.0))
    write(os.path.join(run, "log.txt-2025-01-10-09-30-00"), train_log(81.0))
    write(os.path.join(run, "log.txt-2025-01-03-23-59-59"), train_log(77.0))
    # newest by name, not by modification time
    os.utime(os.path.join(run, "log.txt-2025-01-10-09-30-00"), (1, 1))
    done(run, 12.3)  # logs take precedence over done.json
    assert [os.path.basename(p) for p in rr.log_files(run)] == [
        "log.txt", "log.txt-2025-01-02-10-00-00", "log.txt-2025-01-03-23-59-59", "log.txt-2025-01-10-09-30-00"]
    assert rr.read_accuracy(run) == pytest.approx(81.0)


def test_crashed_forced_rerun_is_not_counted(tmp_path, capsys):
    # FORCE=1 re-evaluation: train.py dropped done.json, started a new log, then crashed; the older log's
    # accuracy belongs to the replaced evaluation
    cfg = tmp_path / "CoOp" / COOP_CFG
    make_run(str(cfg / "seed1"), 80.0)
    run = cfg / "seed2"
    write(str(run / "log.txt"), eval_log(79.4))
    write(str(run / "log.txt-2025-02-01-08-00-00"), eval_log() + "Traceback ...\n")
    assert rr.read_accuracy(str(run)) is None
    assert rr.collect(str(cfg)) == {1: 80.0}
    assert f"ignored: {run} (no done.json: not finished" in capsys.readouterr().err


def test_finished_run_reads_its_newest_log_only(tmp_path):
    # the newest log is the attempt that wrote done.json; an older log's accuracy is another evaluation's
    run = str(tmp_path)
    write(os.path.join(run, "log.txt"), train_log(79.4, vals=(50.0,)))
    write(os.path.join(run, "log.txt-2025-02-01-08-00-00"), train_log(None))
    done(run, 81.25)
    assert rr.read_accuracy(run) == pytest.approx(81.25)


def test_done_json_fallback_and_no_result(tmp_path):
    a = tmp_path / "a"
    write(str(a / "log.txt"), train_log(None))  # log without any result
    done(str(a), 66.25)
    assert rr.read_accuracy(str(a)) == pytest.approx(66.25)

    b = tmp_path / "b"
    done(str(b), None)  # finished without an evaluation
    assert rr.read_accuracy(str(b)) is None

    c = tmp_path / "c"
    write(str(c / "done.json"), "{not json")
    assert rr.read_accuracy(str(c)) is None

    (tmp_path / "d").mkdir()
    assert rr.read_accuracy(str(tmp_path / "d")) is None
    assert rr.read_accuracy(str(tmp_path / "does_not_exist")) is None


def test_backup_folder_is_not_a_seed(tmp_path, capsys):
    cfg = tmp_path / "DPC_CoOp" / DPC_CFG
    make_run(str(cfg / "seed1"), 85.0)
    make_run(str(cfg / "seed2"), 85.0)
    make_run(str(cfg / "seed1_old"), 10.0)  # a backup copy of a finished run
    (cfg / "notes").mkdir()
    assert rr.collect(str(cfg)) == {1: 85.0, 2: 85.0}
    assert rr.collect(str(cfg)) == {1: 85.0, 2: 85.0}
    err = capsys.readouterr().err.splitlines()
    assert err == [f"ignored: {cfg / 'notes'} (not a seed<N> folder)",
                   f"ignored: {cfg / 'seed1_old'} (not a seed<N> folder)"]  # each once
    res = run_cli(str(cfg))
    assert res.returncode == 0, res.stderr
    assert "| 2 " in res.stdout and "85.00 ± 0.00" in res.stdout and "seed1_old" in res.stderr


def test_duplicate_seed_is_an_error(tmp_path):
    cfg = tmp_path / "CoOp" / COOP_CFG
    make_run(str(cfg / "seed1"), 80.0)
    make_run(str(cfg / "seed01"), 70.0)
    make_run(str(cfg / "seed2"), 82.0)
    with pytest.raises(rr.DuplicateSeedError, match="seed01 and seed1 are both seed 1"):
        rr.collect(str(cfg))
    res = run_cli(str(cfg))
    assert res.returncode == 2 and res.stdout == ""
    assert len(res.stderr.splitlines()) == 1 and "seed01 and seed1 are both seed 1" in res.stderr


# ----------------------------------------------------------------------------
# Seeds and statistics
# ----------------------------------------------------------------------------

def test_collect_seeds_and_missing(tmp_path):
    cfg = tmp_path / "CoOp" / COOP_CFG
    make_run(str(cfg / "seed1"), 80.0)
    make_run(str(cfg / "seed2"), 81.5)
    make_run(str(cfg / "seed10"), 83.0)
    (cfg / "seed3").mkdir()  # started, never produced anything
    assert rr.collect(str(cfg)) == {1: 80.0, 2: 81.5, 10: 83.0}
    assert rr.collect(str(cfg), include_missing=True) == {1: 80.0, 2: 81.5, 3: None, 10: 83.0}
    assert list(rr.collect(str(cfg), include_missing=True)) == [1, 2, 3, 10]  # numeric order
    # a run dir itself
    assert rr.collect(str(cfg / "seed2")) == {2: 81.5}


def test_summarize_population_std():
    s = ptr.summarize({1: 80.0, 2: 82.0, 3: 84.0, 4: None})
    assert s.n == 3
    assert s.mean == pytest.approx(82.0)
    assert s.std == pytest.approx(math.sqrt(8 / 3))  # ddof=0: ((-2)^2 + 0 + 2^2) / 3
    assert ptr.summarize([81.2]).std == 0.0
    empty = ptr.summarize([])
    assert (empty.n, empty.mean, empty.std) == (0, None, None)


def test_harmonic_mean():
    assert ptr.harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert ptr.harmonic_mean(0.0, 0.0) == 0.0
    assert ptr.harmonic_mean(80.0, None) is None


def test_base_new_h_from_means_std_from_seeds():
    base = {1: 80.0, 2: 90.0, 3: 70.0}
    new = {1: 60.0, 2: 40.0}  # seed 3 has no new result
    s = ptr.base_new(base, new)
    assert s["base"].mean == pytest.approx(80.0)
    assert s["new"].mean == pytest.approx(50.0)
    assert s["H"].mean == pytest.approx(2 * 80 * 50 / 130)  # 61.538..., from the means
    h1, h2 = 2 * 80 * 60 / 140, 2 * 90 * 40 / 130  # per seed: 68.571, 55.385
    assert s["H"].values == {1: pytest.approx(h1), 2: pytest.approx(h2)}
    assert s["H"].n == 2
    assert s["H"].std == pytest.approx(abs(h1 - h2) / 2)


# ----------------------------------------------------------------------------
# Base-to-new table
# ----------------------------------------------------------------------------

def test_scan_pairs_and_sorts(b2n_root, tmp_path):
    # extra trainers to check the order: CoOp, DPC_CoOp, MaPLe, DPC_MaPLe
    make_run(os.path.join(b2n_root, "train_base", "dtd", "shots_16", "DPC_MaPLe", "c", "seed1"), 1.0)
    make_run(os.path.join(b2n_root, "train_base", "dtd", "shots_16", "MaPLe", "c", "seed1"), 1.0)
    keys = list(rr.scan_base2new(b2n_root, datasets=["dtd"]))
    assert [k.trainer for k in keys] == ["CoOp", "DPC_CoOp", "MaPLe", "DPC_MaPLe"]
    pair = rr.scan_base2new(b2n_root, datasets=["dtd"])[keys[0]]
    assert pair["base"].endswith(os.path.join("train_base", "dtd", "shots_16", "CoOp", COOP_CFG))
    assert pair["new"].endswith(os.path.join("test_new", "dtd", "shots_16", "CoOp", COOP_CFG))
    assert rr.scan_base2new(b2n_root, shots=4) == {}


def test_all_images_runs_are_found_as_zero_shots(b2n_root):
    # SHOTS=all writes shots_all/ (DATASET.NUM_SHOTS 0)
    for side in ("train_base", "test_new"):
        make_run(os.path.join(b2n_root, side, "eurosat", "shots_all", "CoOp", COOP_CFG, "seed1"), 90.0)
    pairs = rr.scan_base2new(b2n_root, datasets=["eurosat"], shots=0)
    assert [(k.dataset, k.shots, k.trainer) for k in pairs] == [("eurosat", 0, "CoOp")]


def test_base2new_rows_values(b2n_root):
    rows = ptr.base2new_rows(b2n_root)
    order = [(r["kind"], r["dataset"], r["trainer"]) for r in rows]
    assert order == [
        ("run", "dtd", "CoOp"), ("run", "dtd", "DPC_CoOp"), ("diff", "dtd", "DPC_CoOp - CoOp"),
        ("run", "eurosat", "CoOp"), ("run", "eurosat", "DPC_CoOp"), ("diff", "eurosat", "DPC_CoOp - CoOp"),
        ("average", "average", "CoOp"), ("average", "average", "DPC_CoOp"),
        ("average_diff", "average", "DPC_CoOp - CoOp"),
    ]
    by = {(r["kind"], r["dataset"], r["trainer"]): r for r in rows}

    r = by[("run", "eurosat", "CoOp")]
    assert r["seeds"] == (3, 3) and r["cfg"] == COOP_CFG
    assert r["base"].mean == pytest.approx(82.0) and r["base"].std == pytest.approx(math.sqrt(8 / 3))
    assert r["new"].mean == pytest.approx(62.0) and r["new"].std == pytest.approx(math.sqrt(8 / 3))
    assert r["H"].mean == pytest.approx(2 * 82 * 62 / 144)  # 70.611
    per_seed_h = [2 * b * n / (b + n) for b, n in zip(*TABLE[("eurosat", "CoOp")])]
    assert r["H"].std == pytest.approx(std(per_seed_h))

    r = by[("run", "eurosat", "DPC_CoOp")]
    assert r["cfg"] == DPC_CFG
    assert r["base"].mean == pytest.approx(86.0) and r["base"].std == pytest.approx(math.sqrt(2 / 3))
    assert r["H"].mean == pytest.approx(2 * 86 * 62 / 148)  # 72.054

    d = by[("diff", "eurosat", "DPC_CoOp - CoOp")]
    assert d["cfg"] == f"vs {COOP_CFG}"  # the only CoOp cfg is the baseline
    assert d["base"].mean == pytest.approx(4.0)
    assert d["new"].mean == pytest.approx(0.0)
    assert d["H"].mean == pytest.approx(2 * 86 * 62 / 148 - 2 * 82 * 62 / 144)

    d = by[("diff", "dtd", "DPC_CoOp - CoOp")]
    assert (d["base"].mean, d["new"].mean) == (pytest.approx(4.0), pytest.approx(2.0))
    assert d["H"].mean == pytest.approx(2 * 74 * 52 / 126 - 2 * 70 * 50 / 120)

    # averages over datasets; H of the averaged base and new (as papers do)
    a = by[("average", "average", "CoOp")]
    assert a["datasets"] == 2
    assert a["base"].mean == pytest.approx(76.0) and a["new"].mean == pytest.approx(56.0)
    assert a["H"].mean == pytest.approx(2 * 76 * 56 / 132)  # 64.485
    a = by[("average", "average", "DPC_CoOp")]
    assert a["base"].mean == pytest.approx(80.0) and a["new"].mean == pytest.approx(57.0)
    assert a["H"].mean == pytest.approx(2 * 80 * 57 / 137)  # 66.569
    d = by[("average_diff", "average", "DPC_CoOp - CoOp")]
    assert (d["base"].mean, d["new"].mean) == (pytest.approx(4.0), pytest.approx(1.0))
    assert d["H"].mean == pytest.approx(2 * 80 * 57 / 137 - 2 * 76 * 56 / 132)


def test_base2new_single_dataset_has_no_average(b2n_root):
    rows = ptr.base2new_rows(b2n_root, datasets=["eurosat"])
    assert [r["kind"] for r in rows] == ["run", "run", "diff"]


def test_base2new_missing_new_results(tmp_path):
    root = str(tmp_path)
    for s, acc in [(1, 80.0), (2, 82.0)]:
        make_run(os.path.join(root, "train_base", "dtd", "shots_16", "MaPLe", "c", f"seed{s}"), acc)
    # new-class eval of seed 1 only
    make_run(os.path.join(root, "test_new", "dtd", "shots_16", "MaPLe", "c", "seed1"), 60.0, new=True)
    (tmp_path / "test_new" / "dtd" / "shots_16" / "MaPLe" / "c" / "seed2").mkdir()
    # a second trainer without any test_new dir
    make_run(os.path.join(root, "train_base", "dtd", "shots_16", "PromptSRC", "c", "seed1"), 83.0)
    rows = ptr.base2new_rows(root)
    maple, src = rows
    assert maple["seeds"] == (2, 1)
    assert maple["H"].mean == pytest.approx(2 * 81 * 60 / 141)
    assert src["new"] is None and src["H"] is None

    res = run_cli("--base2new", root, "--format", "plain")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    maple_line = next(l for l in lines if "MaPLe" in l).split()
    assert maple_line[4] == "2/1"  # base/new seed counts
    src_line = next(l for l in lines if "PromptSRC" in l).split()
    assert src_line[-2:] == ["-", "-"]  # New, H


# ----------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------

def test_cli_dirs_table(b2n_root):
    coop = cfg_dir(b2n_root, "train_base", "eurosat", "CoOp")
    dpc = cfg_dir(b2n_root, "train_base", "eurosat", "DPC_CoOp")
    os.makedirs(os.path.join(coop, "seed4"))  # seed without a result: reported, not counted
    res = run_cli(coop, dpc, "--test-log")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("| directory")
    coop_line = next(l for l in lines if coop + " " in l)
    assert "| 3 " in coop_line and "82.00 ± 1.63" in coop_line
    assert "1: 80.00, 2: 82.00, 3: 84.00, 4: -" in coop_line
    assert "86.00 ± 0.82" in next(l for l in lines if dpc in l)
    assert "seed4" in res.stderr


def test_cli_dir_expands_to_cfg_dirs(b2n_root):
    res = run_cli(os.path.join(b2n_root, "test_new", "dtd"), "--format", "json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert [os.path.basename(os.path.dirname(d["directory"])) for d in data] == ["CoOp", "DPC_CoOp"]
    assert data[1]["mean"] == pytest.approx(52.0) and data[1]["std"] == pytest.approx(0.0)
    assert data[1]["values"] == {"1": 52.0, "2": 52.0, "3": 52.0}


def test_cli_base_new(b2n_root):
    base = cfg_dir(b2n_root, "train_base", "eurosat", "CoOp")
    new = cfg_dir(b2n_root, "test_new", "eurosat", "CoOp")
    res = run_cli("--base", base, "--new", new)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "82.00 ± 1.63" in out and "62.00 ± 1.63" in out
    h_std = std([2 * b * n / (b + n) for b, n in zip(*TABLE[("eurosat", "CoOp")])])
    assert f"{2 * 82 * 62 / 144:.2f} ± {h_std:.2f}" in out

    res = run_cli("--base", base, "--new", new, "--format", "json")
    data = json.loads(res.stdout)
    assert data["H"]["mean"] == pytest.approx(2 * 82 * 62 / 144)
    assert data["base"]["values"] == {"1": 80.0, "2": 82.0, "3": 84.0}


def test_cli_base2new_table(b2n_root):
    res = run_cli("--base2new", b2n_root)
    assert res.returncode == 0, res.stderr
    lines = [l for l in res.stdout.splitlines() if l.startswith("|")]
    cells = [[c.strip() for c in l.strip("|").split("|")] for l in lines]
    assert cells[0] == ["dataset", "shots", "trainer", "cfg", "seeds", "Base", "New", "H"]
    body = cells[2:]
    assert body[3] == ["eurosat", "16", "CoOp", COOP_CFG, "3", "82.00 ± 1.63", "62.00 ± 1.63",
                       f"{2 * 82 * 62 / 144:.2f} ± {std([2 * b * n / (b + n) for b, n in zip(*TABLE[('eurosat', 'CoOp')])]):.2f}"]
    assert body[4][:6] == ["eurosat", "16", "DPC_CoOp", DPC_CFG, "3", "86.00 ± 0.82"]
    assert body[5] == ["eurosat", "16", "DPC_CoOp - CoOp", f"vs {COOP_CFG}", "", "+4.00", "+0.00",
                       f"{2 * 86 * 62 / 148 - 2 * 82 * 62 / 144:+.2f}"]
    assert body[6] == ["average", "16", "CoOp", COOP_CFG, "2 datasets", "76.00", "56.00",
                       f"{2 * 76 * 56 / 132:.2f}"]
    assert body[8][5:] == ["+4.00", "+1.00", f"{2 * 80 * 57 / 137 - 2 * 76 * 56 / 132:+.2f}"]

    # a base2new root given as DIR (as in DESIGN.md) gives the same table
    res2 = run_cli(b2n_root, "--test-log")
    assert res2.returncode == 0 and res2.stdout == res.stdout


def test_cli_base2new_csv_and_json(b2n_root):
    res = run_cli("--base2new", b2n_root, "--dataset", "eurosat", "--shots", "16", "--format", "csv")
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["kind"] for r in rows] == ["run", "run", "diff"]
    assert float(rows[0]["base_mean"]) == pytest.approx(82.0)
    assert float(rows[0]["base_std"]) == pytest.approx(1.63, abs=0.005)
    assert rows[0]["seeds_base"] == "3" and rows[0]["seeds_new"] == "3"
    assert float(rows[2]["H_mean"]) == pytest.approx(2 * 86 * 62 / 148 - 2 * 82 * 62 / 144, abs=0.005)
    assert rows[2]["H_std"] == ""

    res = run_cli("--base2new", b2n_root, "--format", "json")
    data = json.loads(res.stdout)
    assert len(data) == 9
    avg = next(r for r in data if r["kind"] == "average" and r["trainer"] == "DPC_CoOp")
    assert avg["datasets"] == 2 and avg["new"]["mean"] == pytest.approx(57.0)
    assert data[0]["seeds"] == [3, 3] and data[0]["base"]["values"] == {"1": 70.0, "2": 70.0, "3": 70.0}

    for fmt in ("grid", "plain"):
        assert run_cli("--base2new", b2n_root, "--format", fmt).returncode == 0

    # an ASCII-only stdout gets "+-" instead of "±"
    res = run_cli("--base2new", b2n_root, "--format", "plain", env={"PYTHONIOENCODING": "ascii"})
    assert res.returncode == 0, res.stderr
    assert "82.00 +- 1.63" in res.stdout
    assert run_cli("--help", env={"PYTHONIOENCODING": "ascii"}).returncode == 0


def test_cli_errors(tmp_path, b2n_root):
    res = run_cli(str(tmp_path / "nope"))
    assert res.returncode == 1 and "no such directory" in res.stderr and res.stdout == ""

    empty = tmp_path / "empty" / "seed1"
    empty.mkdir(parents=True)
    res = run_cli(str(tmp_path / "empty"))
    assert res.returncode == 1 and "no accuracy found" in res.stderr

    res = run_cli("--base2new", b2n_root, "--dataset", "imagenet")
    assert res.returncode == 1 and "no results" in res.stderr and "imagenet" in res.stderr

    res = run_cli("--base2new", str(tmp_path / "nope"))
    assert res.returncode == 1 and "no such directory" in res.stderr

    res = run_cli("--base", b2n_root)  # --new missing
    assert res.returncode == 2 and "--base and --new" in res.stderr

    res = run_cli()  # nothing given
    assert res.returncode == 2


def test_cli_help():
    res = run_cli("--help")
    assert res.returncode == 0
    for flag in ("--base2new", "--test-log", "--format", "--dataset", "--shots"):
        assert flag in res.stdout
