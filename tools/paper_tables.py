"""Tables 1-5, Fig. 6 and the few-shot results of the DPC paper, built from train.py run dirs.

Layout read (one run's accuracy as tools/parse_test_res.read_accuracy reads it):

    OUTPUT/base2new/{train_base,test_new}/<dataset>/shots_<N>/<trainer>/<cfgdir>/seed<S>/
    OUTPUT/xd/train_source/imagenet/shots_16/<trainer>/<cfgdir>/seed<S>/
    OUTPUT/xd/test_target/<target>/shots_16/<trainer>/<cfgdir>/seed<S>/
    OUTPUT/fewshot/train_all/<dataset>/shots_<N>/<trainer>/<cfgdir>/seed<S>/

<cfgdir> is a config stem (the paper's main setting: Table 1, Table 2, few-shot) or
<stem>@<tag>, an ablation variant of CoOp / DPC_CoOp base-to-new runs:
    Table 3  DPC_CoOp @t3-ts, @t3-dhno, @t3-dhno-we, @t3-we-de, untagged (full DPC)
    Table 4  DPC_CoOp untagged (batch 4, K 8), @b8k4, @b16k2; time = done.json "train_seconds"
    Table 5  CoOp and DPC_CoOp untagged (20 epochs), @ep10, @ep5 (any @ep<N>)
    Fig. 6   DPC_CoOp @wb<v> (untagged: w_b = 0.2) and the @wn-sweep dpc_weight_sweep.json files

Per dataset: mean +- population std over seeds. Averages (as the paper): mean over datasets
of the per-dataset means; H = harmonic mean of the average base and the average new.
A missing run is shown as "-"; an average over fewer datasets than expected says so,
e.g. "Average (9/11)".

    python tools/paper_tables.py OUTPUT [--tables table1 table3 | all] [--datasets dtd eurosat]
        [--seeds 1 2 3] [--shots 16] [--csv DIR] [--markdown FILE] [--figures DIR] [--paper]

Importable API: table1_rows, table2_rows, table3_rows, table4_rows, table5_rows, fig6_rows,
fewshot_rows (flat records, see `record`), render (records -> Rendered tables), write_csv,
write_markdown, PAPER, main; the figures are in tools/paper_figures.py.
"""

import argparse
import csv
import json
import os
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
from tabulate import tabulate

if __package__ in (None, ""):  # run as a script: make the `tools` package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.parse_test_res import (  # noqa: E402
    DPC_PREFIX, Summary, _fmt, _pm, _scan_side, backbone_of, base_new, collect,
    harmonic_mean, scan_base2new, seed_dirs, summarize)

# ----------------------------------------------------------------------------
# Constants
# ----------------------------------------------------------------------------

AVERAGE = "average"
PAPER_LABEL = "(paper)"  # label of a row of published numbers
DECIMALS = 2
PAPER_DATASETS = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                  "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")
CROSS_DATASET_TARGETS = PAPER_DATASETS[1:]
CROSS_DOMAIN_TARGETS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
TARGET_GROUPS = (("cross-dataset", CROSS_DATASET_TARGETS), ("cross-domain", CROSS_DOMAIN_TARGETS))
DATASET_NAMES = {
    "imagenet": "ImageNet", "caltech101": "Caltech101", "oxford_pets": "OxfordPets",
    "stanford_cars": "StanfordCars", "oxford_flowers": "Flowers102", "food101": "Food101",
    "fgvc_aircraft": "FGVCAircraft", "sun397": "SUN397", "dtd": "DTD", "eurosat": "EuroSAT",
    "ucf101": "UCF101", "imagenetv2": "ImageNet-V2", "imagenet_sketch": "ImageNet-Sketch",
    "imagenet_a": "ImageNet-A", "imagenet_r": "ImageNet-R", AVERAGE: "Average",
}
BACKBONE_ORDER = ("CoOp", "MaPLe", "PromptSRC", "PromptKD")
# config stems of the paper's setting (scripts/lib.sh), preferred when a trainer has several
DEFAULT_STEMS = {"CoOp": "vit_b16_c4_ep20_batch32_lr35", "DPC_CoOp": "vit_b16_c4_ep20_batch4_lr35_top8"}
DEFAULT_WB = 0.2        # w_b of the untagged DPC_CoOp run
DEFAULT_WN = 1e-6       # w_n of the paper
DEFAULT_EPOCHS = 20     # epochs of the untagged CoOp / DPC_CoOp runs
TABLES = ("table1", "table2", "table3", "table4", "table5", "fig6", "fewshot")

# Table 3: (trainer, tag, row id, components)
TABLE3_VARIANTS = (
    ("CoOp", None, "CoOp", ()),
    ("DPC_CoOp", "t3-ts", "(1)", ("TS",)),
    ("DPC_CoOp", "t3-dhno", "(2)", ("TS", "DHNO")),
    ("DPC_CoOp", "t3-dhno-we", "(3)", ("TS", "DHNO", "WE")),
    ("DPC_CoOp", "t3-we-de", "(4)", ("TS", "WE", "DE")),
    ("DPC_CoOp", None, "(5)", ("TS", "DHNO", "WE", "DE")),
)
TABLE3_COMPONENTS = ("TS", "DHNO", "WE", "DE")
# Table 4: (tag, batch size, top-K, row id); the first is the reference of the time ratio
TABLE4_VARIANTS = ((None, 4, 8, "b4k8"), ("b8k4", 8, 4, "b8k4"), ("b16k2", 16, 2, "b16k2"))

# Published numbers. Table 1/3/5: averages over the 11 datasets; Table 2: source and target averages;
# Table 4: avg base, its gain over CoOp and the time relative to batch 4 / K 8.
PAPER = {
    "table1": {
        "CoOp": {"base": 81.98, "new": 68.84, "H": 74.84},
        "DPC_CoOp": {"base": 85.15, "new": 68.84, "H": 76.13},
        "MaPLe": {"base": 83.52, "new": 73.31, "H": 78.08},
        "DPC_MaPLe": {"base": 85.93, "new": 73.31, "H": 79.12},
        "PromptSRC": {"base": 83.45, "new": 74.78, "H": 78.87},
        "DPC_PromptSRC": {"base": 86.10, "new": 74.78, "H": 80.04},
        "PromptKD": {"base": 86.86, "new": 80.55, "H": 83.59},
        "DPC_PromptKD": {"base": 87.55, "new": 80.55, "H": 83.91},
    },
    "table2": {
        "CoOp": {"source": 71.25, "cross-dataset": 64.98, "cross-domain": 60.31},
        "DPC_CoOp": {"source": 71.80, "cross-dataset": 64.98, "cross-domain": 60.31},
        "MaPLe": {"source": 70.11, "cross-dataset": 64.79, "cross-domain": 60.11},
        "DPC_MaPLe": {"source": 71.36, "cross-dataset": 64.79, "cross-domain": 60.11},
        "PromptSRC": {"source": 70.65, "cross-dataset": 65.64, "cross-domain": 60.58},
        "DPC_PromptSRC": {"source": 71.42, "cross-dataset": 65.64, "cross-domain": 60.58},
        "PromptKD": {"source": 72.42, "cross-dataset": 70.77, "cross-domain": 71.47},
        "DPC_PromptKD": {"source": 74.43, "cross-dataset": 70.77, "cross-domain": 71.47},
    },
    "table3": {  # rows (1)-(3): our reading of a garbled text extraction, H not given
        "(1)": {"base": 81.98, "new": 68.39},
        "(2)": {"base": 82.69, "new": 64.12},
        "(3)": {"base": 84.28, "new": 65.88},
        "(4)": {"base": 82.23, "new": 68.84, "H": 74.94},
        "(5)": {"base": 85.15, "new": 68.84, "H": 76.13},
    },
    "table4": {
        "b4k8": {"base": 85.15, "delta_base": 3.17, "time_ratio": 1.0},
        "b8k4": {"base": 84.50, "delta_base": 2.52, "time_ratio": 0.69},
        "b16k2": {"base": 83.84, "delta_base": 1.85, "time_ratio": 0.59},
    },
    "table5": {
        "CoOp ep20": {"base": 81.98, "new": 68.84, "H": 74.84},
        "DPC_CoOp ep20": {"base": 85.15, "new": 68.84, "H": 76.13},
        "CoOp ep10": {"base": 81.68, "new": 70.75, "H": 75.82},
        "DPC_CoOp ep10": {"base": 83.99, "new": 70.75, "H": 76.80},
        "CoOp ep5": {"base": 79.64, "new": 74.19, "H": 76.82},
        "DPC_CoOp ep5": {"base": 82.89, "new": 74.19, "H": 78.29},
    },
}
TABLE3_PAPER_NOTE = ("paper rows (1)-(3): the text extraction of Table 3 is ambiguous (marks and numbers run "
                     "together); base 81.98 / 82.69 / 84.28 and new 68.39 / 64.12 / 65.88 are our reading, "
                     "H is not given")

# ----------------------------------------------------------------------------
# Names and order
# ----------------------------------------------------------------------------


def split_cfg(cfgdir: str) -> Tuple[str, Optional[str]]:
    """"stem@tag" -> (stem, tag); an untagged cfg dir -> (stem, None)."""
    stem, _, tag = cfgdir.partition("@")
    return stem, tag or None


def dataset_order(name: str) -> Tuple[int, str]:
    """Paper order (base-to-new datasets, then cross-domain targets), other names after, alphabetically."""
    known = PAPER_DATASETS + CROSS_DOMAIN_TARGETS
    return (known.index(name) if name in known else len(known), name)


def dataset_name(name: str) -> str:
    return DATASET_NAMES.get(name, name)


def trainer_order(trainer: str) -> Tuple[int, str, int]:
    """CoOp, MaPLe, PromptSRC, PromptKD, then the others by name; X right before DPC_X."""
    backbone = backbone_of(trainer)
    rank = BACKBONE_ORDER.index(backbone) if backbone in BACKBONE_ORDER else len(BACKBONE_ORDER)
    return (rank, backbone.lower(), int(trainer.startswith(DPC_PREFIX)))


def method_label(trainer: str, trainers_present: Iterable[str]) -> str:
    """"+ DPC" under its backbone's row, "X + DPC" when X has no row, else the trainer name."""
    if not trainer.startswith(DPC_PREFIX):
        return trainer
    backbone = backbone_of(trainer)
    return "+ DPC" if backbone in set(trainers_present) else f"{backbone} + DPC"


def row_identities(keys: Iterable[Tuple[str, str]]) -> List[Tuple[str, str, str, str]]:
    """(trainer, cfg, row id, label) per (trainer, cfg) key, in table order.

    The row id and label name the cfg when a trainer has several.
    """
    # PromptKD's teacher sits right above the PromptKD rows, not between PromptSRC and its DPC row
    keys = sorted(keys, key=lambda k: (trainer_order("PromptKD")[:2] + (-1,) if is_teacher(*k) else trainer_order(k[0]),
                                       k[1]))
    per_trainer = Counter(tr for tr, cfg in keys if not is_teacher(tr, cfg))
    out = []
    for tr, cfg in keys:
        if is_teacher(tr, cfg):
            out.append((tr, cfg, f"{tr} [{cfg}]", "PromptKD's teacher (PromptSRC, ViT-L/14)"))
            continue
        suffix = f" [{cfg}]" if per_trainer[tr] > 1 else ""
        out.append((tr, cfg, tr + suffix, method_label(tr, per_trainer) + suffix))
    return out


def is_teacher(trainer: str, cfg: str) -> bool:
    """PromptKD's teacher run (scripts/lib.sh TEACHER_CONFIG): PromptSRC on ViT-L/14."""
    return trainer == "PromptSRC" and cfg.startswith("vit_l14")


def expected_count(datasets: Optional[Iterable[str]], default: int = len(PAPER_DATASETS)) -> int:
    """How many datasets an average should cover: those asked for, else the paper's."""
    return len(set(datasets)) if datasets else default


# ----------------------------------------------------------------------------
# Reading runs
# ----------------------------------------------------------------------------


def seed_results(path: Optional[str], seeds: Optional[Iterable[int]] = None) -> Dict:
    """Accuracy per seed under a cfg dir (parse_test_res.collect), only `seeds` when given."""
    if not path:
        return {}
    wanted = set(seeds) if seeds else None
    return {s: a for s, a in collect(path).items() if wanted is None or s in wanted}


def _number(value) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_train_seconds(run_dir: str) -> Optional[float]:
    """done.json "train_seconds" of one run, or None (missing file, bad JSON, older run)."""
    try:
        with open(os.path.join(run_dir, "done.json"), "r", encoding="utf-8") as f:
            return _number(json.load(f).get("train_seconds"))
    except (OSError, ValueError, AttributeError):
        return None


def seed_train_seconds(path: Optional[str], seeds: Optional[Iterable[int]] = None) -> Dict:
    """train_seconds per seed under a cfg dir (None where a run has none)."""
    if not path:
        return {}
    wanted = set(seeds) if seeds else None
    return {s: read_train_seconds(run) for s, run in seed_dirs(path).items() if wanted is None or s in wanted}


def read_weight_sweep(run_dir: str) -> Dict[float, float]:
    """{w_new: accuracy} of the "new" entries of a run's dpc_weight_sweep.json ({} if none)."""
    try:
        with open(os.path.join(run_dir, "dpc_weight_sweep.json"), "r", encoding="utf-8") as f:
            entries = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(entries, list):
        return {}
    out = {}
    for e in entries:
        if isinstance(e, dict) and e.get("mode") == "new":
            w, acc = _number(e.get("w_new")), _number(e.get("accuracy"))
            if w is not None and acc is not None:
                out[w] = acc
    return out


def base2new_groups(root: str, datasets=None, shots: Optional[int] = 16) -> Dict[Tuple[str, str], Dict]:
    """{(trainer, cfgdir): {dataset: {"base": dir or None, "new": dir or None}}} under ROOT/base2new."""
    groups = defaultdict(dict)
    for key, dirs in scan_base2new(os.path.join(root, "base2new"), datasets, shots).items():
        groups[(key.trainer, key.cfg)][key.dataset] = dirs
    return dict(groups)


def untagged(groups: Dict[Tuple[str, str], Dict]) -> Dict[Tuple[str, str], Dict]:
    return {k: v for k, v in groups.items() if split_cfg(k[1])[1] is None}


_NOTES_GIVEN = set()


def note_once(text: str) -> None:
    """Print a note on stderr the first time it comes up."""
    if text not in _NOTES_GIVEN:
        _NOTES_GIVEN.add(text)
        print(text, file=sys.stderr)


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


def xd_groups(root: str, shots: int = 16) -> Dict[Tuple[str, str], Dict]:
    """{(trainer, cfg): {"source": dir or None, "targets": {target: dir}}} under ROOT/xd."""
    groups = defaultdict(lambda: {"source": None, "targets": {}})
    for key, path in _scan_side(os.path.join(root, "xd", "train_source"), {"imagenet"}, shots).items():
        groups[(key.trainer, key.cfg)]["source"] = path
    for key, path in _scan_side(os.path.join(root, "xd", "test_target"), None, shots).items():
        groups[(key.trainer, key.cfg)]["targets"][key.dataset] = path
    return dict(groups)


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


def configured(dirs_by_dataset: Dict[str, Dict], *keys: str) -> Optional[str]:
    """The value of a config key in the train_base runs' run_info.json ("5/8" when datasets differ, e.g. K on
    EuroSAT, which has 5 base classes); None when no run records it."""
    values = set()
    for d in dirs_by_dataset.values():
        for run in seed_dirs(d["base"]).values() if d.get("base") else ():
            try:
                with open(os.path.join(run, "run_info.json"), encoding="utf-8") as f:
                    node = json.load(f)["config"]
                for key in keys:
                    node = node[key]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            values.add(node)
    return "/".join(str(v) for v in sorted(values)) if values else None


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


def wn_sweep_results(dirs_by_dataset: Dict[str, Dict], seeds=None) -> Dict[float, Dict[str, Dict]]:
    """{w_n: {dataset: {seed: new accuracy}}} from the dpc_weight_sweep.json files of test_new runs."""
    wanted = set(seeds) if seeds else None
    out = defaultdict(lambda: defaultdict(dict))
    for ds, dirs in dirs_by_dataset.items():
        if not dirs.get("new"):
            continue
        for seed, run in seed_dirs(dirs["new"]).items():
            if wanted is None or seed in wanted:
                for w, acc in read_weight_sweep(run).items():
                    out[w][ds][seed] = acc
    return out


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
    found = _scan_side(os.path.join(root, "fewshot", "train_all"), set(datasets) if datasets else None, None)
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


# ----------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------


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


RENDERERS = {"table1": render_table1, "table2": render_table2, "table3": render_table3,
             "table4": render_table4, "table5": render_table5, "fig6": render_fig6, "fewshot": render_fewshot}


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


# ----------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------


ABLATIONS = ("table3", "table4", "table5", "fig6")


def has_variant(records: List[dict]) -> bool:
    """True if some record comes from a tagged (ablation) cfg dir."""
    return any("@" in (r["cfg"] or "") for r in records)


def table_records(table: str, root: str, datasets=None, shots: int = 16, seeds=None) -> List[dict]:
    """Records of one table name ("table1" ... "fewshot")."""
    if table == "table2":
        return table2_rows(root, shots, seeds)
    if table == "fewshot":
        return fewshot_rows(root, datasets, seeds)
    builders = {"table1": table1_rows, "table3": table3_rows, "table4": table4_rows,
                "table5": table5_rows, "fig6": fig6_rows}
    return builders[table](root, datasets, shots, seeds)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="paper_tables.py",
        description="Tables 1-5, Fig. 6 and few-shot results of the DPC paper from the run dirs under OUTPUT_ROOT.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit status: 0 ok, 1 no runs for any table asked for, 2 usage error.")
    p.add_argument("root", metavar="OUTPUT_ROOT", help="dir holding base2new/, xd/ and/or fewshot/")
    p.add_argument("--tables", nargs="+", choices=TABLES + ("all",), default=["all"],
                   help="tables to build (default all: every table that has runs; the ablations "
                        "table3-5 and fig6 only when some of their tagged runs exist)")
    p.add_argument("--datasets", nargs="+", metavar="NAME",
                   help="only these datasets (base-to-new and few-shot tables; Table 2 keeps all targets)")
    p.add_argument("--seeds", nargs="+", type=int, metavar="S", help="only these seeds")
    p.add_argument("--shots", type=int, default=16, help="shots of the base-to-new and transfer runs (default 16)")
    p.add_argument("--csv", metavar="DIR", help="write one long-format CSV per table into DIR")
    p.add_argument("--markdown", metavar="FILE", help="write every printed table as GitHub markdown")
    p.add_argument("--figures", metavar="DIR", help="write PNG figures into DIR")
    p.add_argument("--paper", action="store_true", help="print the paper's published numbers next to ours")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if not os.path.isdir(args.root):
        print(f"paper_tables: error: no such directory: {args.root}", file=sys.stderr)
        return 1
    explicit = "all" not in args.tables
    names = [t for t in TABLES if t in args.tables] if explicit else list(TABLES)
    results, printed = {}, []
    for name in names:
        records = table_records(name, args.root, args.datasets, args.shots, args.seeds)
        if not explicit and name in ABLATIONS and not has_variant(records):
            continue  # untagged runs alone are Table 1, not an ablation
        if not records:
            if explicit:
                print(f"{name}: no runs found under {args.root}\n")
            continue
        results[name] = records + (paper_records(name) if args.paper else [])
        tables = render(name, records, args.paper)
        printed += tables
        print(to_text(tables) + "\n")
    if not results:
        print(f"paper_tables: error: no runs for {', '.join(names)} under {args.root}", file=sys.stderr)
        return 1
    written = []
    if args.csv:
        written += [write_csv(recs, os.path.join(args.csv, f"{name}.csv")) for name, recs in results.items()]
    if args.markdown:
        written.append(write_markdown(printed, args.markdown))
    if args.figures:
        from tools.paper_figures import draw_figures  # matplotlib only when figures are asked for
        written += draw_figures(results, args.figures)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
