"""Tests for the paper tables (tools/paper_tables.py, paper_rows.py, paper_render.py) on hand-built run trees
(Dassl-style logs, done.json, weight sweeps)."""

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from tools import paper_facts, paper_figures, paper_render, paper_rows
from tools import paper_tables as pt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "tools", "paper_tables.py")

COOP = "vit_b16_c4_ep20_batch32_lr35"
DPC = "vit_b16_c4_ep20_batch4_lr35_top8"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------
# Fake run trees
# ----------------------------------------------------------------------------

def write_run(run_dir, acc, seconds=None):
    """A finished run: a Dassl log with the final accuracy line and a done.json."""
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "log.txt"), "w") as f:
        f.write("Evaluate on the *test* set\n=> result\n* total: 1,000\n"
                f"* accuracy: {acc}%\n* error: {100 - acc:.1f}%\n")
    done = {"accuracy": acc}
    if seconds is not None:
        done["train_seconds"] = seconds
    with open(os.path.join(run_dir, "done.json"), "w") as f:
        json.dump(done, f)


def b2n(root, side, dataset, trainer, cfg, accs, seconds=(), shots=16):
    """Runs seed1.. of base2new/<side> with these accuracies (and train_seconds)."""
    for i, acc in enumerate(accs):
        secs = seconds[i] if i < len(seconds) else None
        write_run(os.path.join(root, "base2new", side, dataset, f"shots_{shots}", trainer, cfg, f"seed{i + 1}"),
                  acc, secs)


def pair(root, dataset, trainer, cfg, base, new, seconds=()):
    b2n(root, "train_base", dataset, trainer, cfg, base, seconds)
    b2n(root, "test_new", dataset, trainer, cfg, new)


def xd(root, side, dataset, trainer, cfg, accs):
    for i, acc in enumerate(accs):
        write_run(os.path.join(root, "xd", side, dataset, "shots_16", trainer, cfg, f"seed{i + 1}"), acc)


def fewshot(root, dataset, shots, trainer, cfg, accs):
    for i, acc in enumerate(accs):
        write_run(os.path.join(root, "fewshot", "train_all", dataset, f"shots_{shots}", trainer, cfg,
                               f"seed{i + 1}"), acc)


def wn_sweep(root, dataset, seed, points):
    """A finished DPC_CoOp @wn-sweep test_new run with its dpc_weight_sweep.json ({w_new: accuracy})."""
    run = os.path.join(root, "base2new", "test_new", dataset, "shots_16", "DPC_CoOp", f"{DPC}@wn-sweep",
                       f"seed{seed}")
    write_run(run, points[1e-6])  # the configured w_n is evaluated last
    entries = [{"mode": "new", "w_new": w, "accuracy": a} for w, a in points.items()]
    entries.append({"mode": "base", "w_base": 0.2, "accuracy": 99.0})  # ignored
    with open(os.path.join(run, "dpc_weight_sweep.json"), "w") as f:
        json.dump(entries, f)


def plausible_tree(root, datasets=paper_facts.PAPER_DATASETS, seeds=3):
    """A full tree with paper-like numbers for every table (used for the figures)."""
    rng = np.random.default_rng(0)
    offsets = {"CoOp": (0, 0), "MaPLe": (1.5, 4.5), "PromptSRC": (1.5, 6), "PromptKD": (5, 11)}
    for i, ds in enumerate(datasets):
        base0, new0 = 72 + (i * 5) % 16, 50 + (i * 7) % 25

        def noisy(v):
            return [round(float(v + rng.normal(0, 0.6)), 2) for _ in range(seeds)]

        for tr, (db, dn) in offsets.items():
            new = noisy(new0 + dn)
            cfgs = (COOP, DPC) if tr == "CoOp" else ("cfg", "cfg_dpc")
            pair(root, ds, tr, cfgs[0], noisy(base0 + db), new)
            pair(root, ds, "DPC_" + tr, cfgs[1], noisy(base0 + db + 3), new, seconds=[100 + i] * seeds)
            if tr in paper_facts.FIG5_BACKBONES:
                pair(root, ds, "DePT_" + tr, "cfg_dept", noisy(base0 + db + 2), noisy(new0 + dn + 1))
        for tag, db, dn in (("t3-ts", 0.1, -0.5), ("t3-dhno", 0.7, -4.7), ("t3-dhno-we", 2.3, -3),
                            ("t3-we-de", 0.3, 0)):
            pair(root, ds, "DPC_CoOp", f"{DPC}@{tag}", noisy(base0 + db), noisy(new0 + dn))
        pair(root, ds, "DPC_CoOp", f"{DPC}@b8k4", noisy(base0 + 2.5), noisy(new0), seconds=[69 + i] * seeds)
        pair(root, ds, "DPC_CoOp", f"{DPC}@b16k2", noisy(base0 + 1.9), noisy(new0), seconds=[59 + i] * seeds)
        for ep, db, dn in ((10, -0.3, 1.9), (5, -2.3, 5.3)):
            pair(root, ds, "CoOp", f"{COOP}@ep{ep}", noisy(base0 + db), noisy(new0 + dn))
            pair(root, ds, "DPC_CoOp", f"{DPC}@ep{ep}", noisy(base0 + db + 2.5), noisy(new0 + dn))
        for wb in (0.1, 0.5, 1):
            b2n(root, "train_base", ds, "DPC_CoOp", f"{DPC}@wb{wb:g}", noisy(base0 + 3 - 4 * abs(wb - 0.2)))
        for seed in range(1, seeds + 1):
            wn_sweep(root, ds, seed, {w: new0 - 12 * w ** 0.3 for w in (0, 1e-6, 1e-4, 0.01, 0.1, 0.5, 1)})
        for shots in (1, 2, 4, 8, 16):
            for tr, (db, _) in offsets.items():
                fewshot(root, ds, shots, tr, "cfg", noisy(base0 - 20 + 4 * math.log2(shots) + db))
    for tr, src in (("CoOp", 71.2), ("MaPLe", 70.1), ("PromptSRC", 70.6), ("PromptKD", 72.4)):
        for name, d in ((tr, 0), ("DPC_" + tr, 1)):
            xd(root, "train_source", "imagenet", name, "cfg", [src + d, src + d + 0.4, src + d - 0.2])
            for j, target in enumerate(paper_facts.CROSS_DATASET_TARGETS + paper_facts.CROSS_DOMAIN_TARGETS):
                xd(root, "test_target", target, name, "cfg", [50 + (j * 9) % 40 + k for k in (0, 1, 2)])
    return root


def find(records, **match):
    """The one record matching every field given."""
    hits = [r for r in records if all(r.get(k) == v for k, v in match.items())]
    assert len(hits) == 1, (match, hits)
    return hits[0]


def pop_std(values):
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def hmean(b, n):
    return 2 * b * n / (b + n)


@pytest.fixture
def small_tree(tmp_path):
    """CoOp on eurosat (3 seeds) and dtd (2 seeds), DPC_CoOp on eurosat only, plus tagged variants."""
    root = str(tmp_path / "out")
    pair(root, "eurosat", "CoOp", COOP, [80, 82, 84], [50, 52, 54])
    pair(root, "dtd", "CoOp", COOP, [70, 72], [60, 60])
    pair(root, "eurosat", "DPC_CoOp", DPC, [90, 92, 94], [50, 52, 54], seconds=[100, 120, 110])
    pair(root, "eurosat", "DPC_CoOp", f"{DPC}@t3-ts", [81, 81, 81], [49, 49, 49])
    pair(root, "eurosat", "DPC_CoOp", f"{DPC}@b8k4", [88, 88, 88], [50, 50, 50], seconds=[70, 80, 75])
    pair(root, "eurosat", "DPC_CoOp", f"{DPC}@b16k2", [86, 86, 86], [50, 50, 50], seconds=[60, 60, 60])
    pair(root, "eurosat", "CoOp", f"{COOP}@ep10", [79, 79, 79], [55, 55, 55])
    pair(root, "eurosat", "DPC_CoOp", f"{DPC}@ep10", [85, 85, 85], [55, 55, 55])
    return root


# ----------------------------------------------------------------------------
# Table 1
# ----------------------------------------------------------------------------

def test_table1_means_std_h_and_averages(small_tree):
    recs = paper_rows.table1_rows(small_tree)
    base = find(recs, row="CoOp", dataset="eurosat", metric="base")
    assert base["mean"] == pytest.approx(82) and base["n"] == 3
    assert base["std"] == pytest.approx(pop_std([80, 82, 84]))
    h = find(recs, row="CoOp", dataset="eurosat", metric="H")
    assert h["mean"] == pytest.approx(hmean(82, 52))  # H of the means
    assert h["std"] == pytest.approx(pop_std([hmean(b, n) for b, n in ((80, 50), (82, 52), (84, 54))]))
    avg_base = find(recs, row="CoOp", dataset="average", metric="base")
    avg_new = find(recs, row="CoOp", dataset="average", metric="new")
    avg_h = find(recs, row="CoOp", dataset="average", metric="H")
    assert avg_base["mean"] == pytest.approx((82 + 71) / 2) and avg_base["n"] == 2 and avg_base["of"] == 11
    assert avg_new["mean"] == pytest.approx((52 + 60) / 2)
    assert avg_h["mean"] == pytest.approx(hmean(76.5, 56))  # H of the averages, not the average H
    assert avg_base["std"] is None


def test_table1_only_untagged_rows_in_paper_order(small_tree):
    recs = paper_rows.table1_rows(small_tree)
    assert [r["row"] for r in paper_render.ordered_rows(recs)] == ["CoOp", "DPC_CoOp"]
    assert {r["cfg"] for r in recs} == {COOP, DPC}
    assert [r["label"] for r in paper_render.ordered_rows(recs)] == ["CoOp", "+ DPC"]


def test_table1_rendering_missing_dash_partial_average_and_seed_marks(small_tree):
    (table,) = paper_render.render("table1", paper_rows.table1_rows(small_tree))
    assert [h.split("\n")[0] for h in table.headers[1::3]] == ["Average (2/11)", "DTD", "EuroSAT"]
    coop, dpc = table.cells
    # DPC_CoOp has eurosat only: its average is marked, its DTD cells are "-", never 0
    assert dpc[1:4] == ["92.00 (1/11)", "52.00 (1/11)", f"{hmean(92, 52):.2f} (1/11)"]
    assert dpc[4:7] == ["-", "-", "-"]
    assert coop[1] == "76.50"
    text = paper_render.to_text([table])
    assert "[n=2]" in text  # dtd has 2 seeds, the usual count is 3
    assert "82.00 ± 1.63" in text


def test_table1_blocks_follow_the_paper(tmp_path):
    root = str(tmp_path)
    for ds in paper_facts.PAPER_DATASETS:
        pair(root, ds, "MaPLe", "c", [80], [70])
        pair(root, ds, "CoOp", "c", [80], [70])
    tables = paper_render.render("table1", paper_rows.table1_rows(root))
    assert len(tables) == 3
    firsts = [[h.split("\n")[0] for h in t.headers[1::3]] for t in tables]
    assert firsts == [["Average", "ImageNet", "Caltech101", "OxfordPets"],
                      ["StanfordCars", "Flowers102", "Food101", "FGVCAircraft"],
                      ["SUN397", "DTD", "EuroSAT", "UCF101"]]
    assert [c[0] for c in tables[0].cells] == ["CoOp", "MaPLe"]


def test_dataset_and_seed_filters(small_tree):
    recs = paper_rows.table1_rows(small_tree, datasets=["dtd"])
    assert {r["dataset"] for r in recs} == {"dtd", "average"}
    assert find(recs, row="CoOp", dataset="average", metric="base")["of"] == 1
    recs = paper_rows.table1_rows(small_tree, seeds=[1])
    assert find(recs, row="CoOp", dataset="eurosat", metric="base")["mean"] == 80


def test_only_finished_seed_runs_count(tmp_path, capsys):
    root = str(tmp_path)
    pair(root, "eurosat", "DPC_CoOp", DPC, [85, 85], [60, 60])
    base = os.path.join(root, "base2new", "train_base", "eurosat", "shots_16", "DPC_CoOp", DPC)
    write_run(os.path.join(base, "seed1_old"), 10)  # a backup copy
    write_run(os.path.join(base, "seed3"), 50)
    os.remove(os.path.join(base, "seed3", "done.json"))  # its FORCE=1 re-run crashed
    recs = paper_rows.table1_rows(root)
    base_rec = find(recs, row="DPC_CoOp", dataset="eurosat", metric="base")
    assert (base_rec["mean"], base_rec["std"], base_rec["n"]) == (85, 0, 2)
    assert pt.main([root, "--tables", "table1", "table3", "table4"]) == 0  # three tables read these runs
    err = capsys.readouterr().err.splitlines()
    assert err == [f"ignored: {os.path.join(base, 'seed1_old')} (not a seed<N> folder)",
                   f"ignored: {os.path.join(base, 'seed3')} (no done.json: not finished, or its last attempt "
                   "failed; nothing in it is read)"]  # once each

    os.rename(os.path.join(base, "seed1_old"), os.path.join(base, "seed01"))
    res = subprocess.run([sys.executable, SCRIPT, root], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.splitlines()[-1].startswith(f"error: {base}: seed01 and seed1 are both seed 1;")


# ----------------------------------------------------------------------------
# Table 2
# ----------------------------------------------------------------------------

def test_table2_source_and_target_averages(tmp_path):
    root = str(tmp_path)
    xd(root, "train_source", "imagenet", "CoOp", "c", [71, 72])
    xd(root, "test_target", "caltech101", "CoOp", "c", [90, 92])
    xd(root, "test_target", "dtd", "CoOp", "c", [40])
    xd(root, "test_target", "imagenet_a", "CoOp", "c", [50])
    xd(root, "train_source", "imagenet", "DPC_CoOp", "c", [73])
    recs = paper_rows.table2_rows(root)
    assert find(recs, row="CoOp", metric="source")["mean"] == pytest.approx(71.5)
    cross = find(recs, row="CoOp", dataset="average", metric="cross-dataset")
    assert cross["mean"] == pytest.approx((91 + 40) / 2) and (cross["n"], cross["of"]) == (2, 10)
    domain = find(recs, row="CoOp", dataset="average", metric="cross-domain")
    assert domain["mean"] == 50 and domain["of"] == 4
    main, detail = paper_render.render("table2", recs, paper=True)
    assert "(2/10)" in main.headers[2] and "(1/4)" in main.headers[3]
    assert main.cells[1] == [paper_render.PAPER_LABEL, "71.25", "64.98", "60.31"]
    assert main.cells[2][:2] == ["+ DPC", "73.00 ± 0.00"] and main.cells[2][2:] == ["-", "-"]
    assert [h.split("\n")[0] for h in detail.headers] == ["Method", "ImageNet", "Caltech101", "DTD", "ImageNet-A"]


# ----------------------------------------------------------------------------
# Tables 3-5
# ----------------------------------------------------------------------------

def test_table3_tags_and_components(small_tree):
    recs = paper_rows.table3_rows(small_tree)
    rows = paper_render.ordered_rows(recs)
    assert [(r["row"], r["cfg"]) for r in rows] == [("CoOp", COOP), ("(1)", f"{DPC}@t3-ts"), ("(5)", DPC)]
    assert find(recs, row="(1)", dataset="average", metric="base")["mean"] == 81
    (table,) = paper_render.render("table3", recs, paper=True)
    assert table.cells[0][:5] == ["CoOp (backbone)", "", "", "", ""]
    mark = paper_render.check_mark()
    assert table.cells[1][:5] == ["(1)", mark, "", "", ""]
    assert table.cells[2] == [paper_render.PAPER_LABEL, "", "", "", "", "81.98", "68.39", "-"]
    assert any("ambiguous" in n for n in table.notes)
    assert any("(2/11): DTD, EuroSAT" in n for n in table.notes)


def test_table4_delta_and_time_ratio(small_tree):
    recs = paper_rows.table4_rows(small_tree)
    assert [r["row"] for r in paper_render.ordered_rows(recs)] == ["b4k8", "b8k4", "b16k2"]
    assert find(recs, row="b4k8", dataset="eurosat", metric="train_seconds")["mean"] == pytest.approx(110)
    assert find(recs, row="b4k8", metric="time_ratio")["mean"] == pytest.approx(1.0)
    assert find(recs, row="b8k4", metric="time_ratio")["mean"] == pytest.approx(75 / 110)
    assert find(recs, row="b16k2", metric="time_ratio")["mean"] == pytest.approx(60 / 110)
    # delta over the datasets both have (eurosat: CoOp base 82)
    delta = find(recs, row="b8k4", metric="delta_base")
    assert delta["mean"] == pytest.approx(88 - 82) and delta["n"] == 1
    (table,) = paper_render.render("table4", recs, paper=True)
    assert table.cells[0] == ["4", "8", "92.00 (+10.00)", "1.00X", "110.0"]
    assert table.cells[2][2:4] == ["88.00 (+6.00)", "0.68X"]
    assert table.cells[1][2:4] == ["85.15 (+3.17)", "1.00X"]


def test_table5_budgets(small_tree):
    recs = paper_rows.table5_rows(small_tree)
    rows = paper_render.ordered_rows(recs)
    assert [(r["row"], r["epochs"], r["total"]) for r in rows] == [
        ("CoOp ep20", 20, 40), ("DPC_CoOp ep20", 20, None), ("CoOp ep10", 10, 20), ("DPC_CoOp ep10", 10, None)]
    (table,) = paper_render.render("table5", recs, paper=True)
    assert table.cells[0][:3] == ["backbone", "20", "40"]
    assert table.cells[2][:3] == ["+DPC", "+20", ""]
    ep10 = next(c for c in table.cells if c[1] == "10")
    # ep10 runs cover eurosat only, the table eurosat and dtd
    assert ep10[3:] == ["79.00 (1/11)", "55.00 (1/11)", f"{hmean(79, 55):.2f} (1/11)"]


# ----------------------------------------------------------------------------
# Fig. 6 and few-shot
# ----------------------------------------------------------------------------

def test_fig6_weights(tmp_path):
    root = str(tmp_path)
    pair(root, "eurosat", "DPC_CoOp", DPC, [90, 92], [50, 52])
    b2n(root, "train_base", "eurosat", "DPC_CoOp", f"{DPC}@wb0.5", [85, 87])
    b2n(root, "train_base", "eurosat", "DPC_CoOp", f"{DPC}@wb1", [80])
    wn_sweep(root, "eurosat", 1, {0: 51, 1e-6: 51, 1: 30})
    wn_sweep(root, "eurosat", 2, {0: 53, 1e-6: 53, 1: 32})
    recs = paper_rows.fig6_rows(root)
    a = [r for r in recs if r["table"] == "fig6a" and r["dataset"] == "average"]
    assert sorted({r["w_b"] for r in a}) == [0.2, 0.5, 1.0]
    assert find(a, w_b=0.5, metric="base")["mean"] == 86
    assert find(a, w_b=0.5, metric="new")["mean"] == 51  # the untagged run's new accuracy
    b = [r for r in recs if r["table"] == "fig6b" and r["dataset"] == "average"]
    assert sorted({r["w_n"] for r in b}) == [0, 1e-6, 1]
    assert find(b, w_n=1.0, metric="new")["mean"] == 31
    assert find(b, w_n=1.0, metric="H")["mean"] == pytest.approx(hmean(91, 31))
    tables = paper_render.render("fig6", recs)
    assert [t.headers for t in tables] == [["w_b", "Base", "New", "H"], ["w_n", "New", "H"]]
    assert [c[0] for c in tables[1].cells] == ["0", "1e-06", "1"]


def test_fewshot_average_per_shots(tmp_path):
    root = str(tmp_path)
    for shots, (a, b) in {1: (40, 50), 2: (45, 55), 16: (70, 80)}.items():
        fewshot(root, "dtd", shots, "CoOp", "c", [a, a + 2])
        fewshot(root, "eurosat", shots, "CoOp", "c", [b])
    fewshot(root, "dtd", 4, "CoOp", "c", [60])
    recs = paper_rows.fewshot_rows(root)
    assert find(recs, dataset="average", shots=1)["mean"] == pytest.approx((41 + 50) / 2)
    four = find(recs, dataset="average", shots=4)
    assert four["mean"] == 60 and four["n"] == 1
    main, detail = paper_render.render("fewshot", recs)
    assert main.headers == ["Method", "1 shot", "2 shots", "4 shots", "16 shots"]
    assert main.cells[0] == ["CoOp", "45.50", "50.50", "60.00 (1/11)", "75.50"]
    assert detail.cells[1][:2] == ["CoOp", "EuroSAT"] and detail.cells[1][4] == "-"


# ----------------------------------------------------------------------------
# Files, figures, CLI
# ----------------------------------------------------------------------------

def assert_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    assert os.path.getsize(path) > 10_000


def test_cli_writes_csv_markdown_and_figures(tmp_path, capsys):
    import matplotlib.image as mpimg

    root = plausible_tree(str(tmp_path / "out"), datasets=("imagenet", "dtd", "eurosat"), seeds=2)
    out = tmp_path / "res"
    rc = pt.main([root, "--csv", str(out / "csv"), "--markdown", str(out / "tables.md"),
                  "--figures", str(out / "figs"), "--paper"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Average (3/11)" in printed and paper_render.PAPER_LABEL in printed
    for name in paper_facts.TABLES:
        with open(out / "csv" / f"{name}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert rows and {"table", "row", "dataset", "metric", "mean", "std", "n"} <= set(rows[0])
    with open(out / "csv" / "table1.csv", newline="") as f:
        paper = [r for r in csv.DictReader(f) if r["source"] == "paper"]
    assert {"81.98", "85.15"} <= {r["mean"] for r in paper}
    md = (out / "tables.md").read_text()
    assert "| Method" in md and "### Table 4" in md
    with open(out / "csv" / "fig5.csv", newline="") as f:
        fig5 = list(csv.DictReader(f))
    assert {r["method"] for r in fig5} == {"backbone", "DPC", "DePT"}
    assert {("MaPLe", "DPC", "H", "79.12"), ("PromptKD", "backbone", "base", "86.86")} <= {
        (r["row"], r["method"], r["metric"], r["mean"]) for r in fig5 if r["source"] == "paper"}
    assert "Fig. 5. Average H" in printed and "Fig. 1. Average base accuracy" in printed
    pngs = ["fig6.png", "table2.png", "fewshot.png", "table5.png", "fig5.png", "fig1.png"] + [
        f"base2new_{b}.png" for b in ("CoOp", "MaPLe", "PromptSRC", "PromptKD")]
    for name in pngs:
        assert_png(out / "figs" / name)
        assert f"wrote {out / 'figs' / name}" in printed
    image = mpimg.imread(str(out / "figs" / "fig6.png"))
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600


def test_cli_script_selected_table_and_empty_tree(small_tree, tmp_path):
    done = subprocess.run([sys.executable, SCRIPT, small_tree, "--tables", "table4", "fewshot"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "Table 4" in done.stdout and "fewshot: no runs found" in done.stdout
    assert "Table 1" not in done.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    assert pt.main([str(empty)]) == 1


def test_only_figures_with_data(small_tree, tmp_path):
    records = {"table1": paper_rows.table1_rows(small_tree), "table2": []}
    written = paper_figures.draw_figures(records, str(tmp_path / "f"))
    assert [os.path.basename(p) for p in written] == ["base2new_CoOp.png"]
    assert_png(written[0])


def test_default_skips_ablations_without_tagged_runs(tmp_path, capsys):
    root = str(tmp_path)
    pair(root, "dtd", "CoOp", COOP, [70], [60])
    pair(root, "dtd", "DPC_CoOp", DPC, [75], [60])
    assert pt.main([root]) == 0
    out = capsys.readouterr().out
    assert "Table 1." in out and "Table 3." not in out and "Fig. 6a" not in out
    assert pt.main([root, "--tables", "table3"]) == 0
    assert "Table 3." in capsys.readouterr().out
