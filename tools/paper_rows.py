"""The records (one value of one table cell each) of Tables 1-5, Fig. 6 and the few-shot results, from the
run trees under OUTPUT (read by tools/run_results.py). tools/paper_render.py prints them.

Per dataset: mean +- population std over seeds. Averages (as the paper): mean over datasets
of the per-dataset means; H = harmonic mean of the average base and the average new.

Importable API: table1_rows, table2_rows, table3_rows, table4_rows, table5_rows, fig6_rows,
fewshot_rows, fig5_rows (flat records, see `record`), table_records, paper_records.
"""

import os
import re
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import numpy as np

from tools.paper_facts import (
    AVERAGE, DEFAULT_EPOCHS, DEFAULT_STEMS, DEFAULT_WB, FIG5_METHODS, FIGURE_METRICS, PAPER, TABLE3_VARIANTS,
    TABLE4_VARIANTS, TARGET_GROUPS, dataset_order, expected_count, is_teacher, method_label, plugin_backbone,
    published_figure_value, row_identities, split_cfg, trainer_order)
from tools.parse_test_res import Summary, base_new, harmonic_mean, summarize
from tools.run_results import (
    base2new_groups, configured, note_once, scan_side, seed_results, seed_train_seconds, wn_sweep_results, xd_groups)

# ----------------------------------------------------------------------------
# Choosing cfg dirs
# ----------------------------------------------------------------------------


def untagged(groups: Dict[Tuple[str, str], Dict]) -> Dict[Tuple[str, str], Dict]:
    return {k: v for k, v in groups.items() if split_cfg(k[1])[1] is None}


def prefer_cfg(trainer: str, sizes: Dict[str, int]) -> Optional[str]:
    """One of several cfg dirs ({cfg: datasets found}): the paper's stem, else the one with most datasets."""
    if not sizes:
        return None
    default = DEFAULT_STEMS.get(trainer)
    best = min(sizes, key=lambda c: (split_cfg(c)[0] != default, -sizes[c], c))
    if len(sizes) > 1:
        note_once(f"note: {trainer} has several cfg dirs ({', '.join(sorted(sizes))}); using {best}")
    return best


def pick_cfg(groups: Dict[Tuple[str, str], Dict], trainer: str, tag: Optional[str]) -> Optional[str]:
    """The cfg dir of `trainer` carrying `tag` (None: untagged), or None if there is none."""
    sizes = {cfg: len(d) for (tr, cfg), d in groups.items() if tr == trainer and split_cfg(cfg)[1] == tag}
    return prefer_cfg(trainer, sizes)


# ----------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------


def metrics_from_results(base: Dict, new: Dict) -> Dict[str, Summary]:
    """parse_test_res.base_new, keeping only the metrics that have a value."""
    return {m: s for m, s in base_new(base, new).items() if s.mean is not None}


def per_dataset_metrics(dirs_by_dataset: Dict[str, Dict], seeds=None,
                        new_fallback: Optional[Dict[str, Dict]] = None) -> Dict[str, Dict[str, Summary]]:
    """{dataset: {"base"/"new"/"H": Summary}}; `new_fallback` supplies test_new dirs a group lacks."""
    out = {}
    for ds, dirs in dirs_by_dataset.items():
        new_dir = dirs.get("new") or (new_fallback or {}).get(ds, {}).get("new")
        metrics = metrics_from_results(seed_results(dirs.get("base"), seeds), seed_results(new_dir, seeds))
        if metrics:
            out[ds] = metrics
    return out


def mean_over(values: Dict[str, float]) -> Optional[Summary]:
    """Mean of per-dataset values as a Summary (n = datasets, no std), None when empty."""
    if not values:
        return None
    return Summary(len(values), float(np.mean(list(values.values()))), None, dict(values))


def base_new_average(per_dataset: Dict[str, Dict[str, Summary]]) -> Dict[str, Summary]:
    """Average base and new over the datasets that have them; H of the two averages (as the paper)."""
    out = {}
    for metric in ("base", "new"):
        avg = mean_over({ds: m[metric].mean for ds, m in per_dataset.items() if metric in m})
        if avg is not None:
            out[metric] = avg
    if "base" in out and "new" in out:
        h = harmonic_mean(out["base"].mean, out["new"].mean)
        out["H"] = Summary(min(out["base"].n, out["new"].n), h, None, {})
    return out


# ----------------------------------------------------------------------------
# Records: one value of one table cell
# ----------------------------------------------------------------------------


def record(table: str, row: str, label: str, trainer: Optional[str], cfg: Optional[str], dataset: str,
           metric: str, summary: Summary, of: Optional[int] = None, **extra) -> dict:
    """A flat record: n = seeds (per dataset) or datasets averaged (dataset "average", out of `of`)."""
    return {"table": table, "row": row, "label": label, "trainer": trainer, "cfg": cfg,
            "dataset": dataset, "metric": metric, "mean": summary.mean, "std": summary.std,
            "n": summary.n, "of": of, "source": "ours", **extra}


def base2new_records(table: str, row: str, label: str, trainer: str, cfg: str,
                     per_dataset: Dict[str, Dict[str, Summary]], expected: int, **extra) -> List[dict]:
    """Per-dataset base/new/H records of one row, then its averages."""
    recs = []
    for ds in sorted(per_dataset, key=dataset_order):
        for metric, s in per_dataset[ds].items():
            recs.append(record(table, row, label, trainer, cfg, ds, metric, s, **extra))
    for metric, s in base_new_average(per_dataset).items():
        recs.append(record(table, row, label, trainer, cfg, AVERAGE, metric, s, of=expected, **extra))
    return recs


def paper_records(table: str) -> List[dict]:
    """The published numbers of `table` as records (source "paper")."""
    if table == "fig5":
        return figure_paper_records()
    recs = []
    for row, values in PAPER.get(table, {}).items():
        for metric, value in values.items():
            dataset = "imagenet" if metric == "source" else AVERAGE
            rec = record(table, row, row, None, None, dataset, metric, Summary(0, value, None))
            rec["source"] = "paper"
            recs.append(rec)
    return recs


# ----------------------------------------------------------------------------
# Table rows
# ----------------------------------------------------------------------------


def table1_rows(root: str, datasets=None, shots: int = 16, seeds=None) -> List[dict]:
    """Base-to-new results of every untagged (trainer, cfg): per dataset and averaged."""
    groups = untagged(base2new_groups(root, datasets, shots))
    expected = expected_count(datasets)
    recs = []
    for trainer, cfg, row, label in row_identities(groups):
        per_ds = per_dataset_metrics(groups[(trainer, cfg)], seeds)
        recs += base2new_records("table1", row, label, trainer, cfg, per_ds, expected)
    return recs


def table2_rows(root: str, shots: int = 16, seeds=None) -> List[dict]:
    """Cross-dataset / cross-domain transfer: source, per-target and averaged target accuracies."""
    groups = untagged(xd_groups(root, shots))
    recs = []
    for trainer, cfg, row, label in row_identities(groups):
        group = groups[(trainer, cfg)]
        students = [g["targets"] for (t, _), g in groups.items() if t == "PromptKD" and g["targets"]]
        if trainer == "DPC_PromptKD" and not group["targets"] and students:
            # PromptKD's transfer distils a student per target and DPC trains on ImageNet only (xd_train.sh):
            # on a target, both rows are that student
            group = dict(group, targets=students[0])
            note_once("Table 2: DPC_PromptKD's target accuracies are PromptKD's students of each target "
                      "(DPC trains on the source only)")
        source = summarize(seed_results(group["source"], seeds))
        if source.n:
            recs.append(record("table2", row, label, trainer, cfg, "imagenet", "source", source))
        targets = {ds: summarize(seed_results(d, seeds)) for ds, d in group["targets"].items()}
        targets = {ds: s for ds, s in targets.items() if s.n}
        for ds in sorted(targets, key=dataset_order):
            recs.append(record("table2", row, label, trainer, cfg, ds, "target", targets[ds]))
        for name, members in TARGET_GROUPS:
            avg = mean_over({ds: targets[ds].mean for ds in members if ds in targets})
            if avg is not None:
                recs.append(record("table2", row, label, trainer, cfg, AVERAGE, name, avg, of=len(members)))
    return recs


def table3_rows(root: str, datasets=None, shots: int = 16, seeds=None) -> List[dict]:
    """Component ablation (CoOp backbone, DPC_CoOp variants (1)-(5)), per dataset and averaged."""
    groups = base2new_groups(root, datasets, shots)
    expected = expected_count(datasets)
    recs = []
    for trainer, tag, row, parts in TABLE3_VARIANTS:
        cfg = pick_cfg(groups, trainer, tag)
        if cfg is None:
            continue
        label = "CoOp (backbone)" if row == "CoOp" else row
        per_ds = per_dataset_metrics(groups[(trainer, cfg)], seeds)
        recs += base2new_records("table3", row, label, trainer, cfg, per_ds, expected,
                                 components=" ".join(parts))
    return recs


def _mean_ratio(numerator: Dict[str, float], denominator: Dict[str, float]) -> Tuple[Optional[float], int]:
    """Ratio of the means over the datasets both have, and how many those are."""
    common = [ds for ds in numerator if ds in denominator]
    if not common:
        return None, 0
    denom = np.mean([denominator[ds] for ds in common])
    return (float(np.mean([numerator[ds] for ds in common]) / denom) if denom else None), len(common)


def _mean_difference(a: Dict[str, float], b: Dict[str, float]) -> Tuple[Optional[float], int]:
    """Mean of a - b over the datasets both have, and how many those are."""
    common = [ds for ds in a if ds in b]
    return (float(np.mean([a[ds] - b[ds] for ds in common])) if common else None), len(common)


def table4_rows(root: str, datasets=None, shots: int = 16, seeds=None) -> List[dict]:
    """Top-K ablation: DPC_CoOp base accuracy and train time per (batch, K) variant.

    Records per dataset: "base", "train_seconds" (mean over seeds of done.json train_seconds of the
    train_base runs). Averages: "base", "train_seconds", "delta_base" (vs untagged CoOp) and
    "time_ratio" (vs batch 4 / K 8), the last two over the datasets both rows have (n).
    """
    groups = base2new_groups(root, datasets, shots)
    expected = expected_count(datasets)
    coop_cfg = pick_cfg(groups, "CoOp", None)
    coop = per_dataset_metrics(groups[("CoOp", coop_cfg)], seeds) if coop_cfg else {}
    coop_base = {ds: m["base"].mean for ds, m in coop.items() if "base" in m}
    reference_seconds = None
    recs = []
    for tag, batch, top_k, row in TABLE4_VARIANTS:
        cfg = pick_cfg(groups, "DPC_CoOp", tag)
        if cfg is None:
            continue
        dirs = groups[("DPC_CoOp", cfg)]
        batch = configured(dirs, "DATALOADER", "TRAIN_X", "BATCH_SIZE") or batch
        top_k = configured(dirs, "DPC", "TOPK") or top_k
        base = {ds: summarize(seed_results(d["base"], seeds)) for ds, d in dirs.items()}
        base = {ds: s for ds, s in base.items() if s.n}
        seconds = {ds: summarize(seed_train_seconds(d["base"], seeds)) for ds, d in dirs.items()}
        seconds = {ds: s for ds, s in seconds.items() if s.n}
        if not base and not seconds:
            continue

        def add(dataset, metric, summary, of=None):
            recs.append(record("table4", row, row, "DPC_CoOp", cfg, dataset, metric, summary, of=of,
                               batch=batch, K=top_k))

        for ds in sorted(set(base) | set(seconds), key=dataset_order):
            if ds in base:
                add(ds, "base", base[ds])
            if ds in seconds:
                add(ds, "train_seconds", seconds[ds])
        base_means = {ds: s.mean for ds, s in base.items()}
        second_means = {ds: s.mean for ds, s in seconds.items()}
        for metric, means in (("base", base_means), ("train_seconds", second_means)):
            if means:
                add(AVERAGE, metric, mean_over(means), of=expected)
        delta, n_delta = _mean_difference(base_means, coop_base)
        if delta is not None:
            add(AVERAGE, "delta_base", Summary(n_delta, delta, None), of=expected)
        if reference_seconds is None and tag is None:
            reference_seconds = second_means
        ratio, n_ratio = _mean_ratio(second_means, reference_seconds or {})
        if ratio is not None:
            add(AVERAGE, "time_ratio", Summary(n_ratio, ratio, None), of=expected)
    return recs


def epoch_budgets(groups: Dict[Tuple[str, str], Dict]) -> List[Tuple[int, Optional[str]]]:
    """(epochs, tag) of CoOp / DPC_CoOp runs: untagged = 20, @ep<N> = N; most epochs first."""
    budgets = {}
    for trainer, cfg in groups:
        tag = split_cfg(cfg)[1]
        if trainer not in ("CoOp", "DPC_CoOp"):
            continue
        if tag is None:
            budgets[DEFAULT_EPOCHS] = None
        elif re.fullmatch(r"ep\d+", tag):
            budgets.setdefault(int(tag[2:]), tag)
    return sorted(budgets.items(), reverse=True)


def table5_rows(root: str, datasets=None, shots: int = 16, seeds=None) -> List[dict]:
    """Epoch-budget ablation: CoOp and DPC_CoOp per budget (untagged 20 (+20), @ep<N> N (+N))."""
    groups = base2new_groups(root, datasets, shots)
    expected = expected_count(datasets)
    recs = []
    for epochs, tag in epoch_budgets(groups):
        cfgs = {trainer: pick_cfg(groups, trainer, tag) for trainer in ("CoOp", "DPC_CoOp")}
        # the epochs the runs were trained with (their run_info.json), the tag's value when not recorded
        shown = {trainer: configured(groups[(trainer, cfg)], "OPTIM", "MAX_EPOCH") or str(epochs)
                 for trainer, cfg in cfgs.items() if cfg}
        shown = {trainer: int(v) if v.isdigit() else v for trainer, v in shown.items()}  # "10/20" when mixed
        for trainer, label in (("CoOp", "backbone"), ("DPC_CoOp", "+DPC")):
            cfg = cfgs[trainer]
            if cfg is None:
                continue
            per_ds = per_dataset_metrics(groups[(trainer, cfg)], seeds)
            total = None
            if trainer == "CoOp" and all(isinstance(v, int) for v in shown.values()):
                total = sum(shown.values()) if len(shown) == 2 else 2 * shown[trainer]
            recs += base2new_records("table5", f"{trainer} ep{epochs}", label, trainer, cfg, per_ds, expected,
                                     epochs=shown[trainer], total=total)
    return recs


def wb_values(groups: Dict[Tuple[str, str], Dict]) -> Dict[float, Optional[str]]:
    """{w_b: tag} of DPC_CoOp runs: @wb<v> tags and the untagged run (w_b = 0.2)."""
    values = {}
    for trainer, cfg in groups:
        tag = split_cfg(cfg)[1]
        if trainer == "DPC_CoOp" and tag and tag.startswith("wb"):
            try:
                values[float(tag[2:])] = tag
            except ValueError:
                continue
    if pick_cfg(groups, "DPC_CoOp", None) is not None:
        values[DEFAULT_WB] = None  # the untagged run wins over a @wb0.2 one
    return dict(sorted(values.items()))


def fig6_rows(root: str, datasets=None, shots: int = 16, seeds=None) -> List[dict]:
    """Fig. 6 points. Table "fig6a": base (new, H) per w_b, new from the untagged DPC_CoOp run when a
    @wb run has none; "fig6b": new and H (with the untagged base) per w_n of the @wn-sweep files."""
    groups = base2new_groups(root, datasets, shots)
    expected = expected_count(datasets)
    default_cfg = pick_cfg(groups, "DPC_CoOp", None)
    default = groups.get(("DPC_CoOp", default_cfg), {})
    recs = []
    for wb, tag in wb_values(groups).items():
        cfg = default_cfg if tag is None else pick_cfg(groups, "DPC_CoOp", tag)
        per_ds = per_dataset_metrics(groups[("DPC_CoOp", cfg)], seeds, new_fallback=default)
        recs += base2new_records("fig6a", f"w_b={wb:g}", f"{wb:g}", "DPC_CoOp", cfg, per_ds, expected, w_b=wb)
    sweep_cfg = pick_cfg(groups, "DPC_CoOp", "wn-sweep")
    if sweep_cfg is None:
        return recs
    for wn, by_dataset in sorted(wn_sweep_results(groups[("DPC_CoOp", sweep_cfg)], seeds).items()):
        per_ds = {}
        for ds, new in by_dataset.items():
            base = seed_results(default.get(ds, {}).get("base"), seeds)
            per_ds[ds] = metrics_from_results(base, new)
        recs += base2new_records("fig6b", f"w_n={wn:g}", f"{wn:g}", "DPC_CoOp", sweep_cfg, per_ds, expected, w_n=wn)
    return recs


def fewshot_rows(root: str, datasets=None, seeds=None) -> List[dict]:
    """Few-shot accuracy (all classes) per trainer, dataset and shots, and its average over datasets per shots.

    Rows are trainers (untagged cfg dirs); when a (trainer, dataset, shots) has several cfg dirs one is chosen.
    """
    found = scan_side(os.path.join(root, "fewshot", "train_all"), set(datasets) if datasets else None, None)
    paths = defaultdict(dict)  # (trainer, dataset, shots) -> {cfg: path}
    for key, path in found.items():
        if split_cfg(key.cfg)[1] is None:
            paths[(key.trainer, key.dataset, key.shots)][key.cfg] = path
    trainers = sorted({k[0] for k in paths}, key=trainer_order)
    expected = expected_count(datasets)
    recs = []
    for trainer in trainers:
        label = method_label(trainer, trainers)
        by_shots = defaultdict(dict)
        for (tr, ds, shots) in sorted(paths, key=lambda k: (k[2], dataset_order(k[1]))):
            if tr != trainer:
                continue
            cfg = prefer_cfg(trainer, {c: 1 for c in paths[(tr, ds, shots)]})
            s = summarize(seed_results(paths[(tr, ds, shots)][cfg], seeds))
            if s.n:
                by_shots[shots][ds] = s.mean
                recs.append(record("fewshot", trainer, label, trainer, cfg, ds, "acc", s, shots=shots))
        for shots, means in sorted(by_shots.items()):
            recs.append(record("fewshot", trainer, label, trainer, None, AVERAGE, "acc", mean_over(means),
                               of=expected, shots=shots))
    return recs


def fig5_rows(root: str, datasets=None, shots: int = 16, seeds=None) -> List[dict]:
    """Figs. 5 and 1: per backbone, the average base / new / H of the backbone, + DPC and + DePT (Table 1's untagged
    runs and scripts/dept's); a record's row is the backbone, its "method" one of FIG5_METHODS."""
    groups = {k: v for k, v in untagged(base2new_groups(root, datasets, shots)).items() if not is_teacher(*k)}
    expected = expected_count(datasets)
    backbones = sorted({plugin_backbone(tr)[1] for tr, _ in groups}, key=trainer_order)
    recs = []
    for backbone in backbones:
        for method, prefix in FIG5_METHODS:
            trainer = prefix + backbone
            cfg = pick_cfg(groups, trainer, None)
            if cfg is None:
                continue
            per_ds = per_dataset_metrics(groups[(trainer, cfg)], seeds)
            for metric, s in base_new_average(per_ds).items():
                recs.append(record("fig5", backbone, backbone, trainer, cfg, AVERAGE, metric, s, of=expected,
                                   method=method))
    return recs


def figure_paper_records() -> List[dict]:
    """The published bars of Figs. 1 (base) and 5 (H) that the paper gives in numbers (paper_facts)."""
    recs = []
    for figure, metric in FIGURE_METRICS.items():
        for backbone in sorted({plugin_backbone(tr)[1] for tr in PAPER["table1"]}, key=trainer_order):
            for method, _ in FIG5_METHODS:
                value = published_figure_value(figure, backbone, method)
                if value is not None:
                    rec = record("fig5", backbone, backbone, None, None, AVERAGE, metric, Summary(0, value, None),
                                 method=method)
                    recs.append(dict(rec, source="paper"))
    return recs


def table_records(table: str, root: str, datasets=None, shots: int = 16, seeds=None) -> List[dict]:
    """Records of one table name ("table1" ... "fewshot")."""
    if table == "table2":
        return table2_rows(root, shots, seeds)
    if table == "fewshot":
        return fewshot_rows(root, datasets, seeds)
    builders = {"table1": table1_rows, "table3": table3_rows, "table4": table4_rows,
                "table5": table5_rows, "fig6": fig6_rows, "fig5": fig5_rows}
    return builders[table](root, datasets, shots, seeds)
