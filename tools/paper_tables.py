"""Tables 1-5, Figs. 1, 5 and 6 and the few-shot results of the DPC paper, built from train.py run dirs.

Layout read (one run's accuracy as tools/run_results.read_accuracy reads it):

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
    Figs. 5 and 1 (--tables fig5): average H and base of each backbone, its DPC_ and its DePT_ untagged runs

Only finished runs (with done.json) in seed<N>/ folders count; the other folders are listed on stderr as
ignored, with why, and two folders of one seed (seed1, seed01) are an error. Per dataset: mean +-
population std over seeds. Averages (as the paper): mean over datasets
of the per-dataset means; H = harmonic mean of the average base and the average new.
A missing run is shown as "-"; an average over fewer datasets than expected says so,
e.g. "Average (9/11)".

    python tools/paper_tables.py OUTPUT [--tables table1 table3 | all] [--datasets dtd eurosat]
        [--seeds 1 2 3] [--shots 16] [--csv DIR] [--markdown FILE] [--figures DIR] [--paper]

This file is the command line. The work is split by job: tools/run_results.py reads the runs,
tools/paper_rows.py makes the records (paper_facts.py: datasets, order, published numbers),
tools/paper_render.py prints them and tools/paper_figures.py draws them.
"""

import argparse
import os
import sys
from typing import List, Optional

if __package__ in (None, ""):  # run as a script: make the `tools` package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.paper_facts import TABLES  # noqa: E402
from tools.paper_render import render, to_text, write_csv, write_markdown  # noqa: E402
from tools.paper_rows import paper_records, table_records  # noqa: E402

ABLATIONS = ("table3", "table4", "table5", "fig6")


def has_variant(records: List[dict]) -> bool:
    """True if some record comes from a tagged (ablation) cfg dir."""
    return any("@" in (r["cfg"] or "") for r in records)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="paper_tables.py",
        description="Tables 1-5, Figs. 1, 5, 6 and few-shot results of the DPC paper from the run dirs under OUTPUT_ROOT.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit status: 0 ok, 1 no runs for any table asked for, 2 usage error or a seed in two folders.")
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
        if not explicit and name == "fig5" and not any(r["method"] == "DePT" for r in records):
            continue  # without DePT runs, Table 1 has it all
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
    from trainers.console import exit_on_user_error, verbose_requested

    sys.exit(exit_on_user_error(main, None, verbose_requested()))
