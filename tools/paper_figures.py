"""The figures of the paper tables (matplotlib, Agg): Figs. 1, 5 and 6, base/new/H bars per dataset, Table 2,
Table 5 and few-shot curves, drawn from the records of tools/paper_rows.py."""

import math
import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from tools.paper_facts import (AVERAGE, DEFAULT_WB, DEFAULT_WN, FIG5_METHODS, FIGURE_METRICS, TARGET_GROUPS,
                               dataset_name, trainer_order)
from tools.paper_render import (FIGURE_TITLES, METHOD_HEADERS, coverage_tag, figure_backbones, index_records,
                                ordered_rows, ours, present_datasets)
from tools.run_results import DPC_PREFIX, backbone_of

BACKBONE_COLOR, DPC_COLOR, DEPT_COLOR = "#9ecae1", "#08519c", "#fd8d3c"


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: str) -> str:
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path


def _legend_below(fig, ax, ncol: int) -> None:
    """One legend for the figure, under its panels (constrained layout keeps it clear of them)."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=9, frameon=False)


def _value(rec: Optional[dict], key: str = "mean") -> float:
    """A record's mean (or std) for plotting: NaN when missing."""
    return math.nan if rec is None or rec.get(key) is None else float(rec[key])


def _accuracy_limits(ax, values: Iterable[float]) -> None:
    """y range around the finite values (accuracy bars rarely need 0)."""
    finite = [v for v in values if not math.isnan(v)]
    if finite:
        low = max(0.0, 10 * math.floor((min(finite) - 5) / 10))
        ax.set_ylim(low, min(100.0, max(finite) + 4) if max(finite) < 100 else max(finite) + 1)


@dataclass
class Bars:
    """One bar series: per category a value (NaN: missing), a std (NaN: none) and a coverage tag."""
    name: str
    color: str
    values: List[float]
    stds: List[float]
    tags: List[Optional[str]]


def bars_from(name: str, color: str, recs: List[Optional[dict]], covered: List[int]) -> Bars:
    """Bars of records (None: missing); an average over fewer datasets than its category's
    `covered` (those the table has) gets a "k/E" tag."""
    return Bars(name, color, [_value(r) for r in recs], [_value(r, "std") for r in recs],
                [coverage_tag(r, n) for r, n in zip(recs, covered)])


def grouped_bars(ax, categories: List[str], series: List[Bars], rotation: int = 30) -> List[np.ndarray]:
    """Bars per category, one per series; a missing value is marked "n/a", a partial average "k/E".
    Returns each series' bar positions."""
    x = np.arange(len(categories))
    width = 0.8 / len(series)
    positions = [x - 0.4 + width * (i + 0.5) for i in range(len(series))]
    for bars, pos in zip(series, positions):
        ax.bar(pos, bars.values, width, label=bars.name, color=bars.color)
        with_std = [j for j, (v, s) in enumerate(zip(bars.values, bars.stds)) if not (math.isnan(v) or math.isnan(s))]
        if with_std:  # error bars only where a std over seeds exists
            ax.errorbar(pos[with_std], [bars.values[j] for j in with_std], yerr=[bars.stds[j] for j in with_std],
                        fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
    ax.set_xticks(x, categories, rotation=rotation, ha="right" if rotation else "center")
    ax.grid(axis="y", alpha=0.3)
    _accuracy_limits(ax, [v for bars in series for v in bars.values])
    bottom = ax.get_ylim()[0]
    for bars, pos in zip(series, positions):
        for j, (value, std, tag) in enumerate(zip(bars.values, bars.stds, bars.tags)):
            if math.isnan(value):
                ax.text(pos[j], bottom, " n/a", rotation=90, ha="center", va="bottom", fontsize=7, color="0.4")
            elif tag:
                top = value + (0 if math.isnan(std) else std)
                ax.text(pos[j], top, tag, ha="center", va="bottom", fontsize=7)
    return positions


def plot_base2new(records: List[dict], backbone_row: Optional[dict], dpc_row: Optional[dict], path: str) -> str:
    """Base / New / H panels: per-dataset bars (and the average) for a backbone and its DPC version."""
    plt = _pyplot()
    idx = index_records(records, "row", "dataset", "metric")
    columns = [AVERAGE] + present_datasets(records)
    rows = [(r, c) for r, c in ((backbone_row, BACKBONE_COLOR), (dpc_row, DPC_COLOR)) if r is not None]
    fig, axes = plt.subplots(3, 1, figsize=(max(7.0, 0.9 * len(columns) + 2.5), 9.5), sharex=True,
                             layout="constrained")
    for ax, metric, name in zip(axes, ("base", "new", "H"), ("Base accuracy (%)", "New accuracy (%)", "H (%)")):
        series = [bars_from(method_name(r), color, [idx.get((r["row"], c, metric)) for c in columns],
                            [len(columns) - 1] * len(columns)) for r, color in rows]
        grouped_bars(ax, [dataset_name(c) for c in columns], series)
        ax.axvline(0.5, color="0.5", linestyle=":", linewidth=0.8)  # the average apart from the datasets
        ax.set_ylabel(name)
    _legend_below(fig, axes[0], ncol=2)
    backbone = backbone_of(rows[0][0]["trainer"])
    fig.suptitle(f"Base-to-new: {backbone} vs {backbone} + DPC\n"
                 "(per dataset: mean ± std over seeds; Average: mean over datasets)")
    return _save(fig, path)


def base2new_figures(records: List[dict], out_dir: str) -> List[str]:
    """base2new_<Backbone>.png for every backbone with a row (its first cfg) or a DPC row."""
    rows = ordered_rows(ours(records))
    written = []
    for backbone in sorted({backbone_of(r["trainer"]) for r in rows}, key=trainer_order):
        plain = next((r for r in rows if r["trainer"] == backbone), None)
        dpc = next((r for r in rows if r["trainer"] == DPC_PREFIX + backbone), None)
        path = os.path.join(out_dir, f"base2new_{backbone}.png")
        written.append(plot_base2new(ours(records), plain, dpc, path))
    return written


def method_colors(rows: List[dict]) -> Dict[str, str]:
    """Paired colors: light for a backbone, dark for its DPC version."""
    import matplotlib
    palette = matplotlib.colormaps["tab20"]
    backbones = sorted({backbone_of(r["trainer"]) for r in rows}, key=trainer_order)
    colors = {}
    for r in rows:
        i = backbones.index(backbone_of(r["trainer"])) % 10
        dpc = r["trainer"].startswith(DPC_PREFIX)
        colors[r["row"]] = matplotlib.colors.to_hex(palette(2 * i if dpc else 2 * i + 1))
    return colors


def method_name(row: dict) -> str:
    """"X + DPC" for a DPC row, else its label (cfg suffix included)."""
    if row["trainer"].startswith(DPC_PREFIX):
        return row["label"].replace("+ DPC", f"{backbone_of(row['trainer'])} + DPC", 1)
    return row["label"]


def plot_table2(records: List[dict], path: str) -> str:
    """Source / avg. cross-dataset / avg. cross-domain bars per method."""
    plt = _pyplot()
    records = ours(records)
    idx = index_records(records, "row", "dataset", "metric")
    rows = ordered_rows(records)
    colors = method_colors(rows)
    keys = [("imagenet", "source"), (AVERAGE, "cross-dataset"), (AVERAGE, "cross-domain")]
    targets = {r["dataset"] for r in records if r["metric"] == "target"}
    covered = [0] + [len(targets & set(members)) for _, members in TARGET_GROUPS]
    series = [bars_from(method_name(r), colors[r["row"]], [idx.get((r["row"], *k)) for k in keys], covered)
              for r in rows]
    fig, ax = plt.subplots(figsize=(max(7.0, 1.2 * len(rows) + 3), 5.5), layout="constrained")
    grouped_bars(ax, ["Source: ImageNet", "Avg. of cross-dataset", "Avg. of cross-domain"], series, rotation=0)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Cross-dataset and cross-domain transfer\n(error bars: std over seeds of the source accuracy)")
    _legend_below(fig, ax, ncol=4)
    return _save(fig, path)


def plot_fewshot(records: List[dict], path: str) -> str:
    """Average accuracy over datasets vs shots (log2 axis), one line per trainer; DPC dashed."""
    plt = _pyplot()
    import matplotlib
    records = ours(records)
    rows = ordered_rows(records)
    backbones = sorted({backbone_of(r["trainer"]) for r in rows}, key=trainer_order)
    averages = [r for r in records if r["dataset"] == AVERAGE]
    fig, ax = plt.subplots(figsize=(7, 5), layout="constrained")
    for r in rows:
        points = sorted((a["shots"], a["mean"]) for a in averages if a["row"] == r["row"])
        color = matplotlib.colormaps["tab10"](backbones.index(backbone_of(r["trainer"])) % 10)
        style = "--" if r["trainer"].startswith(DPC_PREFIX) else "-"
        ax.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", label=method_name(r),
                color=color)
    shots = sorted({a["shots"] for a in averages})
    ax.set_xscale("log", base=2)
    ax.set_xticks(shots, [str(s) for s in shots])
    ax.minorticks_off()
    ax.set_xlabel("shots per class")
    ax.set_ylabel("accuracy (%), average over datasets")
    ax.set_title(f"Few-shot classification ({_datasets_count(records)})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    return _save(fig, path)


def _datasets_count(records: List[dict]) -> str:
    n = len(present_datasets(records))
    return f"{n} dataset{'s' if n != 1 else ''}"


def plot_table5(records: List[dict], path: str) -> str:
    """Base / New / H averages per epoch budget, CoOp vs CoOp + DPC."""
    plt = _pyplot()
    records = ours(records)
    idx = index_records(records, "row", "dataset", "metric")
    # budgets by row id ("CoOp ep20" -> "ep20"), most epochs first; labelled with the epochs the runs recorded
    epochs = {tuple(r["row"].split(" ", 1)): r["epochs"] for r in records}
    budgets = sorted({budget for _, budget in epochs}, key=lambda b: -int(b[2:]))
    labels = [f"{epochs.get(('CoOp', b), '?')} (+{epochs.get(('DPC_CoOp', b), '?')})" for b in budgets]
    fig, axes = plt.subplots(1, 3, figsize=(11, 4.5), layout="constrained")
    for ax, metric, name in zip(axes, ("base", "new", "H"), ("Base", "New", "H")):
        series = [bars_from(label, color, [idx.get((f"{trainer} {b}", AVERAGE, metric)) for b in budgets],
                            [len(present_datasets(records))] * len(budgets))
                  for trainer, label, color in (("CoOp", "CoOp", BACKBONE_COLOR),
                                                ("DPC_CoOp", "CoOp + DPC", DPC_COLOR))]
        grouped_bars(ax, labels, series, rotation=0)
        ax.set_xlabel("epochs: backbone (+DPC)")
        ax.set_title(name)
    axes[0].set_ylabel("accuracy (%), average over datasets")
    _legend_below(fig, axes[0], ncol=2)
    fig.suptitle(f"Table 5: fewer fine-tuning epochs ({_datasets_count(records)})")
    return _save(fig, path)


def _weight_curve(ax, recs: List[dict], weight: str, metrics: Tuple[str, ...]) -> None:
    idx = index_records(recs, "row", "dataset", "metric")
    rows = sorted(ordered_rows(recs), key=lambda r: r[weight])
    xs = [r[weight] for r in rows]
    styles = {"base": ("o-", "Base", DPC_COLOR), "new": ("s-", "New", "#31a354"), "H": ("^--", "H", "#636363")}
    for metric in metrics:
        style, name, color = styles[metric]
        ax.plot(xs, [_value(idx.get((r["row"], AVERAGE, metric))) for r in rows], style, label=name, color=color)
    ax.set_ylabel("accuracy (%), average over datasets")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)


def _empty_panel(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_fig6(records: List[dict], path: str) -> str:
    """(a) base (and H) vs w_b; (b) new (and H) vs w_n on a symlog axis that shows 0."""
    plt = _pyplot()
    records = ours(records)
    fig, (ax_b, ax_n) = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    base_recs = [r for r in records if r["table"] == "fig6a"]
    new_recs = [r for r in records if r["table"] == "fig6b"]
    if base_recs:
        _weight_curve(ax_b, base_recs, "w_b", ("base", "H"))
        ax_b.axvline(DEFAULT_WB, color="0.6", linestyle=":")
        ax_b.set_xlabel("w_b (dotted: 0.2, the default)")
    else:
        _empty_panel(ax_b, "no @wb runs")
    ax_b.set_title("(a) base classes vs w_b")
    if new_recs:
        _weight_curve(ax_n, new_recs, "w_n", ("new", "H"))
        ax_n.set_xscale("symlog", linthresh=DEFAULT_WN)
        ax_n.axvline(DEFAULT_WN, color="0.6", linestyle=":")
        ax_n.set_xlabel("w_n (symlog; dotted: 1e-6, the default)")
    else:
        _empty_panel(ax_n, "no @wn-sweep runs")
    ax_n.set_title("(b) new classes vs w_n")
    fig.suptitle(f"Fig. 6: collaboration weights (DPC_CoOp, {_datasets_count(records)})")
    return _save(fig, path)


def plot_plugins(records: List[dict], figure: str, path: str) -> str:
    """Fig. 5 (average H) or Fig. 1 (average base): per backbone, bars of the backbone, + DPC and + DePT, each with
    its value; the published value (where the paper gives one) as a black tick over its bar."""
    plt = _pyplot()
    metric = FIGURE_METRICS[figure]
    published = index_records([r for r in records if r.get("source") == "paper"], "row", "method", "metric")
    records = ours(records)
    idx = index_records(records, "row", "method", "metric")
    backbones = figure_backbones(records, figure)
    covered = max(r["n"] for r in records)
    colors = {"backbone": BACKBONE_COLOR, "DPC": DPC_COLOR, "DePT": DEPT_COLOR}
    series = [bars_from("backbone alone" if m == "backbone" else METHOD_HEADERS[m], colors[m],
                        [idx.get((b, m, metric)) for b in backbones], [covered] * len(backbones))
              for m, _ in FIG5_METHODS]
    tags = [bars.tags for bars in series]
    for bars in series:  # the coverage tag goes under the value label, not over it
        bars.tags = [None] * len(bars.tags)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(backbones) + 2.5), 5.0), layout="constrained")
    positions = grouped_bars(ax, backbones, series, rotation=0)
    ax.set_xlim(-0.5, len(backbones) - 0.5)
    shown = [v for bars in series for v in bars.values]
    marks = []
    for (method, _), pos, bars, tag in zip(FIG5_METHODS, positions, series, tags):
        for j, backbone in enumerate(backbones):
            if not math.isnan(bars.values[j]):
                label = f"{bars.values[j]:.1f}" + (f"\n({tag[j]})" if tag[j] else "")
                ax.text(pos[j], bars.values[j], label, ha="center", va="bottom", fontsize=8)
            paper = _value(published.get((backbone, method, metric)))
            if not math.isnan(paper):
                marks.append((pos[j], paper))
    if marks:
        ax.scatter([m[0] for m in marks], [m[1] for m in marks], marker="_", s=400, linewidths=2.5, color="black",
                   zorder=3, label="paper (Table 1's average)")
        _accuracy_limits(ax, shown + [m[1] for m in marks])
    ax.set_ylabel(f"{'H' if metric == 'H' else 'base accuracy'} (%), average over {covered} dataset"
                  + ("s" if covered != 1 else ""))
    ax.set_title(FIGURE_TITLES[figure])
    _legend_below(fig, ax, ncol=4)
    return _save(fig, path)


def draw_figures(results: Dict[str, List[dict]], out_dir: str) -> List[str]:
    """PNGs of the tables in `results` ({table: records}) that have data; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    if ours(results.get("table1", [])):
        written += base2new_figures(results["table1"], out_dir)
    plots = (("table2", plot_table2, "table2.png"), ("fewshot", plot_fewshot, "fewshot.png"),
             ("table5", plot_table5, "table5.png"), ("fig6", plot_fig6, "fig6.png"))
    for table, plot, name in plots:
        if ours(results.get(table, [])):
            written.append(plot(results[table], os.path.join(out_dir, name)))
    if ours(results.get("fig5", [])):
        written += [plot_plugins(results["fig5"], figure, os.path.join(out_dir, f"{figure}.png"))
                    for figure in FIGURE_METRICS]
    return written
