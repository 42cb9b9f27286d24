"""Printing the paper tables' records (tools/paper_rows.py): the paper's layout as text or GitHub markdown,
long-format CSV. A missing run is shown as "-"; an average over fewer datasets than expected says so,
e.g. "Average (9/11)".

Importable API: render (records -> Rendered tables), to_text, write_csv, write_markdown.
"""

import csv
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from tabulate import tabulate

from tools.paper_facts import (AVERAGE, FIG5_BACKBONES, FIG5_METHODS, FIGURE_METRICS, FIGURES_PAPER_NOTE, PAPER,
                               PAPER_DATASETS, TABLE3_COMPONENTS, TARGET_GROUPS, dataset_name, dataset_order,
                               published_figure_value)
from tools.parse_test_res import Summary, _fmt, _pm
from tools.run_results import DPC_PREFIX

PAPER_LABEL = "(paper)"  # label of a row of published numbers
DECIMALS = 2
TABLE3_PAPER_NOTE = ("paper rows (1)-(3): the text extraction of Table 3 is ambiguous (marks and numbers run "
                     "together); base 81.98 / 82.69 / 84.28 and new 68.39 / 64.12 / 65.88 are our reading, "
                     "H is not given")


@dataclass
class Rendered:
    """One printed table: headers may hold "\n" (two header lines in text, one in markdown)."""
    title: str
    headers: List[str]
    cells: List[List[str]]
    notes: List[str] = field(default_factory=list)


def ours(records: List[dict]) -> List[dict]:
    return [r for r in records if r.get("source", "ours") == "ours"]


def index_records(records: List[dict], *fields: str) -> Dict[tuple, dict]:
    return {tuple(r.get(f) for f in fields): r for r in records}


def ordered_rows(records: List[dict]) -> List[dict]:
    """The first record of every row, in table order."""
    seen = {}
    for r in records:
        seen.setdefault(r["row"], r)
    return list(seen.values())


def present_datasets(records: List[dict]) -> List[str]:
    return sorted({r["dataset"] for r in records if r["dataset"] != AVERAGE}, key=dataset_order)


def usual_seed_count(records: List[dict]) -> Optional[int]:
    """Most common number of seeds of the per-dataset cells (None if there are none)."""
    counts = Counter(r["n"] for r in records if r["dataset"] != AVERAGE and r["n"])
    return counts.most_common(1)[0][0] if counts else None


def seeds_note(records: List[dict]) -> List[str]:
    counts = Counter(r["n"] for r in records if r["dataset"] != AVERAGE and r["n"])
    if not counts:
        return []
    usual = counts.most_common(1)[0][0]
    note = f"per dataset: mean {_pm()} population std over seeds, {usual} seed(s) per cell"
    return [note + ("; [n=k]: a cell with k seeds" if len(counts) > 1 else "")]


def value_cell(rec: Optional[dict], usual_seeds: Optional[int]) -> str:
    """"mean ± std" of a per-dataset cell, "[n=k]" when its seed count is unusual, "-" when missing."""
    if rec is None or rec["mean"] is None:
        return "-"
    text = _fmt(Summary(rec["n"], rec["mean"], rec["std"]), DECIMALS)
    if rec["n"] and usual_seeds is not None and rec["n"] != usual_seeds:
        text += f" [n={rec['n']}]"
    return text


def coverage_tag(rec: Optional[dict], covered: int) -> Optional[str]:
    """"k/E" for an average over k of E datasets when the table covers another number, else None."""
    if rec is None or not rec.get("of") or rec["n"] == covered:
        return None
    return f"{rec['n']}/{rec['of']}"


def average_cell(rec: Optional[dict], covered: int) -> str:
    """An average; "(k/E)" when it covers fewer datasets than the table has."""
    if rec is None or rec["mean"] is None:
        return "-"
    tag = coverage_tag(rec, covered)
    return f"{rec['mean']:.{DECIMALS}f}" + (f" ({tag})" if tag else "")


def paper_cell(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.{DECIMALS}f}"


def average_title(name: str, covered: int, of: Optional[int]) -> str:
    """"Average" or "Average (9/11)" when the table covers fewer datasets than expected."""
    return name if not of or covered >= of else f"{name} ({covered}/{of})"


def expected_of(records: List[dict], default: int) -> int:
    return next((r["of"] for r in records if r["dataset"] == AVERAGE and r.get("of")), default)


def datasets_note(datasets: List[str], of: int) -> str:
    names = ", ".join(dataset_name(d) for d in datasets)
    return f"averages over the datasets present ({len(datasets)}/{of}): {names}"


def partial_note(cells: List[List[str]]) -> List[str]:
    if any(re.search(r"\(\d+/\d+\)$", c) for row in cells for c in row):
        return ["(k/E): an average over only k of E datasets"]
    return []


AVERAGE_NOTE = "Average: mean over datasets of the per-dataset means; H = harmonic mean of the average base and new"


def chunks(items: List, size: int) -> List[List]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def render_table1(records: List[dict], paper: bool = False) -> List[Rendered]:
    """Table 1 in blocks of four column groups (Average first), Base/New/H each."""
    records = ours(records)
    if not records:
        return []
    datasets = present_datasets(records)
    of = expected_of(records, len(PAPER_DATASETS))
    idx = index_records(records, "row", "dataset", "metric")
    usual = usual_seed_count(records)
    blocks = chunks([AVERAGE] + datasets, 4)
    out = []
    for i, block in enumerate(blocks):
        headers = ["Method"]
        for col in block:
            name = average_title("Average", len(datasets), of) if col == AVERAGE else dataset_name(col)
            headers += [f"{name}\nBase", "\nNew", "\nH"]
        cells = []
        for r in ordered_rows(records):
            cells.append([r["label"]] + [
                average_cell(idx.get((r["row"], col, m)), len(datasets)) if col == AVERAGE
                else value_cell(idx.get((r["row"], col, m)), usual)
                for col in block for m in ("base", "new", "H")])
            published = PAPER["table1"].get(r["trainer"])
            if paper and published and AVERAGE in block:
                cells.append([PAPER_LABEL] + [paper_cell(published.get(m)) if col == AVERAGE else ""
                                            for col in block for m in ("base", "new", "H")])
        title = (f"Table 1. Base-to-new generalization (untagged cfg dirs), part {i + 1}/{len(blocks)}")
        out.append(Rendered(title, headers, cells))
    notes = [AVERAGE_NOTE] + partial_note([c for t in out for c in t.cells]) + seeds_note(records)
    if paper:
        notes.append("paper: the published averages over 11 datasets (DPC paper, Table 1)")
    out[-1].notes = notes
    return out


def render_table2(records: List[dict], paper: bool = False) -> List[Rendered]:
    """Table 2 (source and the two target averages) and a detail table with one column per target."""
    records = ours(records)
    if not records:
        return []
    idx = index_records(records, "row", "dataset", "metric")
    usual = usual_seed_count(records)
    targets = sorted({r["dataset"] for r in records if r["metric"] == "target"}, key=dataset_order)
    covered = {name: len([t for t in targets if t in members]) for name, members in TARGET_GROUPS}
    headers = ["Method", "Source\nImageNet"] + [
        average_title(f"Avg. of\n{name}", covered[name], len(members)) for name, members in TARGET_GROUPS]
    cells = []
    for r in ordered_rows(records):
        cells.append([r["label"], value_cell(idx.get((r["row"], "imagenet", "source")), usual)]
                     + [average_cell(idx.get((r["row"], AVERAGE, name)), covered[name]) for name, _ in TARGET_GROUPS])
        published = PAPER["table2"].get(r["trainer"])
        if paper and published:
            cells.append([PAPER_LABEL, paper_cell(published["source"])]
                         + [paper_cell(published[name]) for name, _ in TARGET_GROUPS])
    notes = ["target averages: mean over the targets present of the per-target means"]
    notes += partial_note(cells) + seeds_note(records)
    if paper:
        notes.append("paper: the published numbers (DPC paper, Table 2)")
    main = Rendered("Table 2. Cross-dataset and cross-domain transfer (ImageNet source, untagged cfg dirs)",
                    headers, cells, notes)
    detail_headers = ["Method", "ImageNet\n(source)"] + [dataset_name(t) for t in targets]
    detail = [[r["label"], value_cell(idx.get((r["row"], "imagenet", "source")), usual)]
              + [value_cell(idx.get((r["row"], t, "target")), usual) for t in targets]
              for r in ordered_rows(records)]
    return [main, Rendered("Table 2 (detail). Accuracy per target", detail_headers, detail)]


def base_new_h_cells(idx: Dict[tuple, dict], row: str, covered: int) -> List[str]:
    return [average_cell(idx.get((row, AVERAGE, m)), covered) for m in ("base", "new", "H")]


def paper_bnh_cells(values: Optional[dict]) -> List[str]:
    return [paper_cell((values or {}).get(m)) for m in ("base", "new", "H")]


def check_mark() -> str:
    """"✓", or "x" when stdout cannot encode it."""
    return "x" if _pm() == "+-" else "✓"


def render_table3(records: List[dict], paper: bool = False) -> List[Rendered]:
    records = ours(records)
    if not records:
        return []
    datasets = present_datasets(records)
    of = expected_of(records, len(PAPER_DATASETS))
    idx = index_records(records, "row", "dataset", "metric")
    cells = []
    for r in ordered_rows(records):
        parts = r["components"].split()
        marks = [check_mark() if c in parts else "" for c in TABLE3_COMPONENTS]
        cells.append([r["label"]] + marks + base_new_h_cells(idx, r["row"], len(datasets)))
        if paper and r["row"] in PAPER["table3"]:
            cells.append([PAPER_LABEL, "", "", "", ""] + paper_bnh_cells(PAPER["table3"][r["row"]]))
    notes = [datasets_note(datasets, of), AVERAGE_NOTE] + partial_note(cells)
    notes.append("rows: CoOp; DPC_CoOp @t3-ts (1), @t3-dhno (2), @t3-dhno-we (3), @t3-we-de (4), untagged (5)")
    if paper:
        notes += ["paper: the published averages over 11 datasets (DPC paper, Table 3)", TABLE3_PAPER_NOTE]
    headers = ["", *TABLE3_COMPONENTS, "Base", "New", "H"]
    return [Rendered("Table 3. Components of DPC (CoOp backbone, base-to-new)", headers, cells, notes)]


def render_table4(records: List[dict], paper: bool = False) -> List[Rendered]:
    records = ours(records)
    if not records:
        return []
    datasets = present_datasets(records)
    of = expected_of(records, len(PAPER_DATASETS))
    idx = index_records(records, "row", "dataset", "metric")
    cells = []
    for r in ordered_rows(records):
        base = average_cell(idx.get((r["row"], AVERAGE, "base")), len(datasets))
        delta = idx.get((r["row"], AVERAGE, "delta_base"))
        ratio = idx.get((r["row"], AVERAGE, "time_ratio"))
        seconds = idx.get((r["row"], AVERAGE, "train_seconds"))
        cells.append([str(r["batch"]), str(r["K"]),
                      base + (f" ({delta['mean']:+.{DECIMALS}f})" if delta else ""),
                      f"{ratio['mean']:.2f}X" if ratio else "-",
                      f"{seconds['mean']:.1f}" if seconds else "-"])
        published = PAPER["table4"].get(r["row"])
        if paper and published:
            cells.append([PAPER_LABEL, "", f"{published['base']:.2f} ({published['delta_base']:+.2f})",
                          f"{published['time_ratio']:.2f}X", ""])
    notes = [datasets_note(datasets, of),
             "(+d): gain of the average base accuracy over untagged CoOp, over the datasets both have",
             "Time: mean train_seconds (done.json) of the DPC_CoOp train_base runs relative to batch 4 / K 8, "
             "over the datasets both have; train s: its average over datasets"] + partial_note(cells)
    if paper:
        notes.append("paper: the published numbers (DPC paper, Table 4)")
    headers = ["batch size", "Top-K", "Avg. base accuracy", "Time", "train s"]
    return [Rendered("Table 4. Top-K of the negative sampler (DPC_CoOp, mini-batch 32)", headers, cells, notes)]


def render_table5(records: List[dict], paper: bool = False) -> List[Rendered]:
    records = ours(records)
    if not records:
        return []
    datasets = present_datasets(records)
    of = expected_of(records, len(PAPER_DATASETS))
    idx = index_records(records, "row", "dataset", "metric")
    cells = []
    for r in ordered_rows(records):
        is_dpc = r["trainer"].startswith(DPC_PREFIX)
        epoch = f"+{r['epochs']}" if is_dpc else str(r["epochs"])
        total = "" if r["total"] is None else str(r["total"])
        cells.append([r["label"], epoch, total] + base_new_h_cells(idx, r["row"], len(datasets)))
        if paper and r["row"] in PAPER["table5"]:
            cells.append([PAPER_LABEL, "", ""] + paper_bnh_cells(PAPER["table5"][r["row"]]))
    notes = [datasets_note(datasets, of), AVERAGE_NOTE,
             "rows: CoOp (backbone) and DPC_CoOp, untagged = 20 (+20) epochs, @ep<N> = N (+N); epochs as the "
             "runs recorded them (run_info.json)"] + partial_note(cells)
    if paper:
        notes.append("paper: the published averages over 11 datasets (DPC paper, Table 5)")
    headers = ["Model", "epoch", "total", "Base", "New", "H"]
    return [Rendered("Table 5. Fewer fine-tuning epochs (CoOp backbone)", headers, cells, notes)]


def render_fig6(records: List[dict], paper: bool = False) -> List[Rendered]:
    records = ours(records)
    out = []
    for table, weight, metrics, title in (
            ("fig6a", "w_b", ("base", "new", "H"), "Fig. 6a. Base accuracy vs w_b (DPC_CoOp @wb<v>; untagged = 0.2)"),
            ("fig6b", "w_n", ("new", "H"), "Fig. 6b. New accuracy vs w_n (DPC_CoOp @wn-sweep)")):
        recs = [r for r in records if r["table"] == table]
        if not recs:
            continue
        datasets = present_datasets(recs)
        of = expected_of(recs, len(PAPER_DATASETS))
        idx = index_records(recs, "row", "dataset", "metric")
        cells = [[r["label"]] + [average_cell(idx.get((r["row"], AVERAGE, m)), len(datasets)) for m in metrics]
                 for r in ordered_rows(recs)]
        notes = [datasets_note(datasets, of), AVERAGE_NOTE] + partial_note(cells)
        if table == "fig6a":
            notes.append("New of a @wb run without test_new runs: the untagged DPC_CoOp run's")
        else:
            notes.append("H with the base accuracy of the untagged DPC_CoOp run")
        out.append(Rendered(title, [weight] + [m if m == "H" else m.capitalize() for m in metrics], cells, notes))
    return out


def render_fewshot(records: List[dict], paper: bool = False) -> List[Rendered]:
    records = ours(records)
    if not records:
        return []
    datasets = present_datasets(records)
    of = expected_of(records, len(PAPER_DATASETS))
    shots = sorted({r["shots"] for r in records})
    idx = index_records(records, "row", "dataset", "shots")
    usual = usual_seed_count(records)
    rows = ordered_rows(records)
    headers = ["Method"] + [f"{s} shot" + ("s" if s > 1 else "") for s in shots]
    cells = [[r["label"]] + [average_cell(idx.get((r["row"], AVERAGE, s)), len(datasets)) for s in shots]
             for r in rows]
    notes = [datasets_note(datasets, of), "all classes; mean over datasets of the per-dataset means"]
    notes += partial_note(cells)
    main = Rendered("Few-shot classification (untagged cfg dirs), average over datasets", headers, cells, notes)
    detail = [[r["label"], dataset_name(ds)] + [value_cell(idx.get((r["row"], ds, s)), usual) for s in shots]
              for r in rows for ds in datasets]
    detail_headers = ["Method", "Dataset"] + headers[1:]
    return [main, Rendered("Few-shot classification per dataset", detail_headers, detail, seeds_note(records))]


METHOD_HEADERS = {"backbone": "alone", "DPC": "+ DPC", "DePT": "+ DePT"}
FIGURE_TITLES = {"fig5": "Fig. 5. Average H of base-to-new: backbone, + DPC, + DePT",
                 "fig1": "Fig. 1. Average base accuracy: backbone, + DPC, + DePT"}  # tables and PNGs


def figure_backbones(records: List[dict], figure: str) -> List[str]:
    """Backbones of Fig. 5 (the paper's three and any other with a DePT run) or Fig. 1 (every one), in order."""
    rows = [r["row"] for r in ordered_rows(records)]
    if figure == "fig1":
        return rows
    return [b for b in rows if b in FIG5_BACKBONES or any(r["row"] == b and r["method"] == "DePT" for r in records)]


def render_fig5(records: List[dict], paper: bool = False) -> List[Rendered]:
    """Figs. 5 (H) and 1 (base) as tables: a row per backbone, a column per method (ours, then the paper's)."""
    records = ours(records)
    if not records:
        return []
    covered = max(r["n"] for r in records)
    idx = index_records(records, "row", "method", "metric")
    out = []
    for figure, metric in FIGURE_METRICS.items():
        methods = [m for m, _ in FIG5_METHODS]
        headers = ["Backbone"] + [METHOD_HEADERS[m] for m in methods]
        if paper:
            headers[1:] = [("ours\n" if i == 0 else "\n") + h for i, h in enumerate(headers[1:])]
            headers += [f"paper\n{METHOD_HEADERS[m]}" if i == 0 else f"\n{METHOD_HEADERS[m]}"
                        for i, m in enumerate(methods)]
        cells = []
        for backbone in figure_backbones(records, figure):
            row = [backbone] + [average_cell(idx.get((backbone, m, metric)), covered) for m in methods]
            if paper:
                row += [paper_cell(published_figure_value(figure, backbone, m)) for m in methods]
            cells.append(row)
        of = expected_of(records, len(PAPER_DATASETS))
        title = FIGURE_TITLES[figure] + f" ({covered}{f'/{of}' if covered < of else ''} datasets)"
        notes = [AVERAGE_NOTE] + partial_note(cells)
        if figure == "fig1":
            notes += ["the cfg dir of each trainer as in Table 1; DePT: scripts/dept (one stage, DePT's recipe)"]
            if paper:
                notes.append(FIGURES_PAPER_NOTE)
        out.append(Rendered(title, headers, cells, notes))
    return out


RENDERERS = {"table1": render_table1, "table2": render_table2, "table3": render_table3,
             "table4": render_table4, "table5": render_table5, "fig6": render_fig6, "fewshot": render_fewshot,
             "fig5": render_fig5}


def render(table: str, records: List[dict], paper: bool = False) -> List[Rendered]:
    """The printed tables of `table` ("table1" ... "fewshot") from its records."""
    return RENDERERS[table](records, paper)


def to_text(tables: List[Rendered], markdown: bool = False) -> str:
    """Tables as text (tabulate "simple") or GitHub markdown, titles and notes included."""
    parts = []
    for t in tables:
        if markdown:
            headers = [" ".join(h.split("\n")).strip() for h in t.headers]
            body = tabulate(t.cells, headers=headers, tablefmt="github", disable_numparse=True)
            parts.append((f"### {t.title}\n\n" if t.title else "") + body
                         + ("\n\n" + "\n".join(f"- {n}" for n in t.notes) if t.notes else ""))
        else:
            body = tabulate(t.cells, headers=t.headers, tablefmt="simple", disable_numparse=True)
            parts.append((f"{t.title}\n" if t.title else "") + body + "".join(f"\n  {n}" for n in t.notes))
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------

CSV_COLUMNS = ["table", "row", "label", "trainer", "cfg", "dataset", "metric", "mean", "std", "n", "of", "source"]


def write_csv(records: List[dict], path: str) -> str:
    """Long-format CSV: one line per record, extra fields (shots, w_b, ...) after the common ones."""
    extras = sorted({k for r in records for k in r} - set(CSV_COLUMNS))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS + extras, restval="")
        writer.writeheader()
        for r in records:
            writer.writerow({k: "" if v is None else v for k, v in r.items()})
    return path


def write_markdown(tables: List[Rendered], path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("# DPC paper tables\n\n" + to_text(tables, markdown=True) + "\n")
    return path

