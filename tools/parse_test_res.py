"""Collect test accuracies written by train.py (Dassl logs) and tabulate them.

Three ways to call it:

    # one row per DIR: a run dir, or a dir whose children seed*/ are run dirs
    python tools/parse_test_res.py output/.../CoOp/vit_b16_ep50 [DIR ...] [--test-log]

    # base / new / harmonic mean H of one method
    python tools/parse_test_res.py --base output/base2new/train_base/eurosat/shots_16/CoOp/vit_b16_ep50 \
                                   --new  output/base2new/test_new/eurosat/shots_16/CoOp/vit_b16_ep50

    # the whole base-to-new table: every (dataset, trainer, cfg) found under ROOT,
    # DPC_X right after X, DPC - X difference rows and per-trainer averages
    python tools/parse_test_res.py --base2new output/base2new [--dataset eurosat dtd] [--shots 16]

Only finished runs (with done.json) in seed<N>/ folders count; the other folders are listed on
stderr as ignored, with why, and two folders of one seed (seed1, seed01) are an error (exit status 2).
A run's accuracy is the last "* accuracy: xx.x%" line of its newest Dassl log, else done.json's
"accuracy" (tools/run_results.py). Mean +- std over seeds uses numpy's population std
(ddof=0), as upstream CoOp does. H = 2*b*n / (b + n) of the mean base and mean
new accuracies; its std is over the per-seed H values.

Reading runs is tools/run_results.py's job (read_accuracy, collect, scan_base2new, ...).

Importable API: summarize, harmonic_mean, base_new, base2new_rows, render.
"""

import argparse
import csv
import io
import json
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
from tabulate import tabulate

if __package__ in (None, ""):  # run as a script: make the `tools` package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.run_results import (  # noqa: E402
    DPC_PREFIX, Seed, backbone_of, backbone_sort_key, collect, find_result_dirs, is_base2new_root, scan_base2new)

FORMATS = ("github", "grid", "plain", "csv", "json")


# ----------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------

@dataclass
class Summary:
    """Mean and population std over `values` (n of them); mean/std None when n == 0."""
    n: int
    mean: Optional[float]
    std: Optional[float]
    values: Dict[Seed, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "std": self.std,
                "values": {str(k): v for k, v in self.values.items()}}


def summarize(values: Union[Dict[Seed, Optional[float]], Iterable[Optional[float]]]) -> Summary:
    """Summary (n, mean, numpy population std) of accuracies; None entries are ignored.

    `values` is a seed->acc dict (as from collect) or any iterable of numbers.
    """
    items = values.items() if isinstance(values, dict) else enumerate(values)
    kept = {k: float(v) for k, v in items if v is not None}
    if not kept:
        return Summary(0, None, None, {})
    arr = np.array(list(kept.values()), dtype=float)
    return Summary(len(arr), float(arr.mean()), float(arr.std()), kept)


def harmonic_mean(base: Optional[float], new: Optional[float]) -> Optional[float]:
    """H = 2*b*n / (b + n); None if either is None, 0 when both are 0."""
    if base is None or new is None:
        return None
    if base + new == 0:
        return 0.0
    return 2.0 * base * new / (base + new)


def base_new(base: Dict[Seed, Optional[float]], new: Dict[Seed, Optional[float]]) -> Dict[str, Summary]:
    """Base, new and H summaries from per-seed base and new accuracies.

    H.mean is the harmonic mean of base.mean and new.mean; H.values/std are
    the per-seed H over seeds that have both results (std None if none do).
    """
    b, n = summarize(base), summarize(new)
    per_seed = {s: harmonic_mean(b.values[s], n.values[s]) for s in b.values if s in n.values}
    hs = summarize(per_seed)
    h = Summary(hs.n, harmonic_mean(b.mean, n.mean), hs.std, hs.values)
    return {"base": b, "new": n, "H": h}


# ----------------------------------------------------------------------------
# Base-to-new table
# ----------------------------------------------------------------------------


def _row(kind, dataset, shots, trainer, cfg, base, new, h, seeds=None, datasets=None):
    return {"kind": kind, "dataset": dataset, "shots": shots, "trainer": trainer, "cfg": cfg,
            "seeds": seeds, "datasets": datasets, "base": base, "new": new, "H": h}


def _diff(a: Optional[Summary], b: Optional[Summary]) -> Optional[Summary]:
    """Difference of means a - b (no std), None if either mean is missing."""
    if a is None or b is None or a.mean is None or b.mean is None:
        return None
    return Summary(0, a.mean - b.mean, None, {})


def _diff_rows(rows: List[dict], kind: str) -> List[dict]:
    """Insert a DPC_X - X row after every DPC_X row with an X row of the same dataset and shots.

    The X row with the same cfg is the baseline; without one, every X cfg is
    compared (the cfg cell names the baseline cfg).
    """
    out = []
    for r in rows:
        out.append(r)
        if not r["trainer"].startswith(DPC_PREFIX):
            continue
        bb = backbone_of(r["trainer"])
        cands = [c for c in rows if c["trainer"] == bb and c["dataset"] == r["dataset"]
                 and c["shots"] == r["shots"] and c.get("covers") == r.get("covers")]
        same = [c for c in cands if c["cfg"] == r["cfg"]]
        for c in same or cands:
            out.append(_row(kind, r["dataset"], r["shots"], f"{r['trainer']} - {bb}",
                            r["cfg"] if c["cfg"] == r["cfg"] else f"vs {c['cfg']}",
                            _diff(r["base"], c["base"]), _diff(r["new"], c["new"]), _diff(r["H"], c["H"])))
    return out


def _average(group: List[dict]) -> Tuple[Summary, Summary, Summary]:
    """Averages over datasets of the per-dataset means; a metric is None unless every dataset has it."""
    def avg(metric):
        means = {r["dataset"]: r[metric].mean if r[metric] else None for r in group}
        if any(v is None for v in means.values()):
            return None
        return Summary(len(means), float(np.mean(list(means.values()))), None, means)

    b, n = avg("base"), avg("new")
    h = harmonic_mean(b.mean if b else None, n.mean if n else None)
    return b, n, (Summary(len(group), h, None, {}) if h is not None else None)


def base2new_rows(root: str, datasets: Optional[Iterable[str]] = None,
                  shots: Optional[int] = None) -> List[dict]:
    """Rows of the base-to-new table under ROOT.

    Every row is a dict: kind ("run", "diff", "average", "average_diff"),
    dataset, shots, trainer, cfg, seeds ((n_base, n_new) for runs), datasets
    (count, for averages), base/new/H (Summary or None). Diff rows hold
    DPC_X - X differences of the means; averages (added when several datasets
    are present) are the mean over datasets, with H from the averaged base and new.
    """
    rows = []
    for k, d in scan_base2new(root, datasets, shots).items():
        base = collect(d["base"]) if d["base"] else {}
        new = collect(d["new"]) if d["new"] else {}
        if not base and not new:
            continue
        s = base_new(base, new)
        rows.append(_row("run", k.dataset, k.shots, k.trainer, k.cfg,
                         s["base"] if s["base"].n else None, s["new"] if s["new"].n else None,
                         s["H"] if s["H"].mean is not None else None,
                         seeds=(s["base"].n, s["new"].n)))
    out = _diff_rows(rows, "diff")

    if len({r["dataset"] for r in rows}) > 1:
        groups = defaultdict(list)
        for r in rows:
            groups[(r["shots"], r["trainer"], r["cfg"])].append(r)
        avgs = []
        for (sh, tr, cfg) in sorted(groups, key=lambda g: (g[0], backbone_sort_key(g[1]), g[2])):
            grp = groups[(sh, tr, cfg)]
            b, n, h = _average(grp)
            row = _row("average", "average", sh, tr, cfg, b, n, h, datasets=len(grp))
            row["covers"] = tuple(sorted(r["dataset"] for r in grp))  # diff only over the same datasets
            avgs.append(row)
        out += _diff_rows(avgs, "average_diff")
        for r in out:
            r.pop("covers", None)
    return out


# ----------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------

def _pm() -> str:
    """"±", or "+-" when stdout cannot encode it (e.g. an ASCII-only terminal)."""
    try:
        "±".encode(getattr(sys.stdout, "encoding", None) or "utf-8")
        return "±"
    except (UnicodeEncodeError, LookupError):
        return "+-"


def _fmt(s: Optional[Summary], dec: int, signed: bool = False) -> str:
    if s is None or s.mean is None:
        return "-"
    if signed:
        return f"{s.mean:+.{dec}f}"
    return f"{s.mean:.{dec}f}" if s.std is None else f"{s.mean:.{dec}f} {_pm()} {s.std:.{dec}f}"


def _num(x: Optional[float], dec: int) -> str:
    return "" if x is None else f"{x:.{dec}f}"


def _per_seed(values: Dict[Seed, Optional[float]], dec: int) -> str:
    return ", ".join(f"{k}: {'-' if v is None else format(v, f'.{dec}f')}" for k, v in values.items())


def _json_ready(obj):
    if isinstance(obj, Summary):
        return obj.to_dict()
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    return obj


def render(headers: List[str], cells: List[List], fmt: str, records=None) -> str:
    """Text of a table: tabulate formats, csv, or json (`records`, else dicts built from cells)."""
    if fmt == "json":
        data = records if records is not None else [dict(zip(headers, c)) for c in cells]
        return json.dumps(_json_ready(data), indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(headers)
        w.writerows(cells)
        return buf.getvalue().rstrip("\n")
    return tabulate(cells, headers=headers, tablefmt=fmt, disable_numparse=True)


def table_dirs(dirs: List[str], fmt: str, dec: int) -> Tuple[str, int]:
    """Table for positional DIRs; returns (text, number of rows with results)."""
    recs = []
    for d in dirs:
        accs = collect(d, include_missing=True)  # says on stderr why a seed has no result
        s = summarize(accs)
        missing = [k for k, v in accs.items() if v is None]
        recs.append({"directory": d, "n": s.n, "mean": s.mean, "std": s.std,
                     "values": accs, "missing": missing, "summary": s})
    found = sum(r["n"] > 0 for r in recs)
    if fmt == "json":
        return render([], [], fmt, [{k: v for k, v in r.items() if k != "summary"} for r in recs]), found
    if fmt == "csv":
        cells = [[r["directory"], r["n"], _num(r["mean"], dec), _num(r["std"], dec),
                  _per_seed(r["values"], dec)] for r in recs]
        return render(["directory", "seeds", "mean", "std", "per_seed"], cells, fmt), found
    cells = [[r["directory"], r["n"], _fmt(r["summary"], dec), _per_seed(r["values"], dec)] for r in recs]
    return render(["directory", "seeds", "accuracy", "per seed"], cells, fmt), found


def table_base_new(base_dir: str, new_dir: str, fmt: str, dec: int) -> Tuple[str, int]:
    """Base / new / H table of one method; returns (text, number of metrics with results)."""
    base = collect(base_dir, include_missing=True)
    new = collect(new_dir, include_missing=True)
    s = base_new(base, new)
    raw = {"base": base, "new": new, "H": s["H"].values}
    found = int(s["base"].n > 0) + int(s["new"].n > 0)
    if fmt == "json":
        rec = {m: {**s[m].to_dict(), "values": {str(k): v for k, v in raw[m].items()}} for m in s}
        rec["base_dir"], rec["new_dir"] = base_dir, new_dir
        return render([], [], fmt, rec), found
    if fmt == "csv":
        cells = [[m, s[m].n, _num(s[m].mean, dec), _num(s[m].std, dec), _per_seed(raw[m], dec)] for m in s]
        return render(["metric", "seeds", "mean", "std", "per_seed"], cells, fmt), found
    names = {"base": "Base", "new": "New", "H": "H"}
    cells = [[names[m], s[m].n, _fmt(s[m], dec), _per_seed(raw[m], dec)] for m in s]
    return render(["metric", "seeds", f"mean {_pm()} std", "per seed"], cells, fmt), found


def _seeds_cell(r: dict) -> str:
    if r["kind"].startswith("average"):
        return f"{r['datasets']} datasets" if r["kind"] == "average" else ""
    if r["seeds"] is None:
        return ""
    nb, nn = r["seeds"]
    return str(nb) if nb == nn or nn == 0 else f"{nb}/{nn}"


def table_base2new(root: str, datasets, shots, fmt: str, dec: int) -> Tuple[str, int]:
    """Side-by-side base-to-new table under ROOT; returns (text, number of run rows)."""
    rows = base2new_rows(root, datasets, shots)
    found = sum(r["kind"] == "run" for r in rows)
    if fmt == "json":
        return render([], [], fmt, rows), found
    if fmt == "csv":
        cells = []
        for r in rows:
            nb, nn = r["seeds"] if r["seeds"] else ("", "")
            cells.append([r["kind"], r["dataset"], r["shots"], r["trainer"], r["cfg"], nb, nn,
                          "" if r["datasets"] is None else r["datasets"]]
                         + [_num(getattr(r[m], a) if r[m] else None, dec)
                            for m in ("base", "new", "H") for a in ("mean", "std")])
        headers = ["kind", "dataset", "shots", "trainer", "cfg", "seeds_base", "seeds_new", "datasets",
                   "base_mean", "base_std", "new_mean", "new_std", "H_mean", "H_std"]
        return render(headers, cells, fmt), found
    cells = [[r["dataset"], r["shots"], r["trainer"], r["cfg"], _seeds_cell(r)]
             + [_fmt(r[m], dec, signed=r["kind"].endswith("diff")) for m in ("base", "new", "H")]
             for r in rows]
    return render(["dataset", "shots", "trainer", "cfg", "seeds", "Base", "New", "H"], cells, fmt), found


# ----------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="parse_test_res.py",
        description="Tabulate test accuracies (mean +- population std over seeds) of train.py runs.\n"
                    "Only finished runs (done.json) in seed<N>/ folders count; other folders are listed\n"
                    "on stderr as ignored. A run's accuracy is the last '* accuracy:' line of its newest\n"
                    "Dassl log (log.txt, log.txt-<timestamp>), else done.json's accuracy.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  %(prog)s output/base2new/train_base/eurosat/shots_16/CoOp/vit_b16_ep50\n"
               "  %(prog)s --base output/base2new/train_base/eurosat/shots_16/CoOp/vit_b16_ep50 \\\n"
               "           --new  output/base2new/test_new/eurosat/shots_16/CoOp/vit_b16_ep50\n"
               "  %(prog)s --base2new output/base2new --dataset eurosat dtd --shots 16 --format csv\n"
               "\nseeds column of --base2new: 'B/N' when base and new seed counts differ.\n"
               "exit status: 0 ok, 1 nothing matched / no results, 2 usage error or a seed in two folders.")
    p.add_argument("dirs", nargs="*", metavar="DIR",
                   help="run dir, or dir whose seed*/ children are run dirs; one row each. A dir that is "
                        "neither is searched below for such dirs; a base2new root (with train_base/ or "
                        "test_new/) given alone is treated as --base2new")
    p.add_argument("--test-log", action="store_true",
                   help="accepted for compatibility with upstream CoOp (DIRs are eval-only test runs); "
                        "parsing is the same either way")
    p.add_argument("--base", metavar="DIR", help="base-class runs (train_base/.../<cfg>); needs --new")
    p.add_argument("--new", metavar="DIR", help="new-class runs (test_new/.../<cfg>); needs --base")
    p.add_argument("--base2new", metavar="ROOT",
                   help="scan ROOT/train_base and ROOT/test_new and print one table of base / new / H")
    p.add_argument("--dataset", nargs="+", action="extend", metavar="NAME",
                   help="with --base2new: only these datasets (dir names, e.g. eurosat)")
    p.add_argument("--shots", type=int, help="with --base2new: only shots_<N> dirs")
    p.add_argument("--format", choices=FORMATS, default="github", help="output format (default: github)")
    p.add_argument("--decimals", type=int, default=2, help="decimals shown (default: 2)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    modes = sum([bool(args.dirs), args.base is not None or args.new is not None, args.base2new is not None])
    if modes != 1:
        parser.error("give DIR(s), or --base DIR --new DIR, or --base2new ROOT (exactly one of them)")
    if (args.base is None) != (args.new is None):
        parser.error("--base and --new go together")
    if (args.dataset or args.shots is not None) and args.base2new is None and not (
            len(args.dirs) == 1 and is_base2new_root(args.dirs[0])):
        parser.error("--dataset/--shots only apply to --base2new")

    def fail(msg):
        print(f"parse_test_res: error: {msg}", file=sys.stderr)
        return 1

    root = args.base2new
    if root is None and len(args.dirs) == 1 and is_base2new_root(args.dirs[0]):
        root = args.dirs[0]
    paths = [root] if root is not None else (args.dirs or [args.base, args.new])
    missing = [p for p in paths if not os.path.isdir(p)]
    if missing:
        return fail("no such directory: " + ", ".join(missing))

    if root is not None:
        text, found = table_base2new(root, args.dataset, args.shots, args.format, args.decimals)
        if not found:
            what = []
            if args.dataset:
                what.append("dataset " + "/".join(args.dataset))
            if args.shots is not None:
                what.append(f"shots_{args.shots}")
            return fail(f"no results under {root}/train_base or {root}/test_new"
                        + (f" for {', '.join(what)}" if what else ""))
    elif args.base is not None:
        text, found = table_base_new(args.base, args.new, args.format, args.decimals)
        if not found:
            return fail(f"no results in {args.base} or {args.new}")
    else:
        dirs = []
        for d in args.dirs:
            if is_base2new_root(d):
                return fail(f"{d} is a base2new root; pass it alone or with --base2new")
            dirs += find_result_dirs(d) or [d]
        text, found = table_dirs(dirs, args.format, args.decimals)
        if not found:
            return fail("no accuracy found in " + ", ".join(args.dirs))
    print(text)
    return 0


if __name__ == "__main__":
    from trainers.console import exit_on_user_error, verbose_requested

    sys.exit(exit_on_user_error(main, None, verbose_requested()))
