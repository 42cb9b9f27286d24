"""Reading train.py run dirs: one run's accuracy, the seed runs of a cfg dir, the result trees.

Layout (as scripts/ write it):

    <top>/<dataset>/shots_<N>/<trainer>/<cfgdir>/seed<S>/    e.g. OUTPUT/base2new/train_base/...

Only finished runs count: those with done.json, in seed<N>/ folders (seed_runs, the one place that
finds them). Every other folder is said once on stderr to be ignored, with why; two folders of one
seed (seed1 and seed01) are an error. A run's accuracy is the last "* accuracy: xx.x%" line of its
newest Dassl log (log.txt-<timestamp> files are newer than log.txt), else done.json's "accuracy".

Used by tools/parse_test_res.py and the paper tables (tools/paper_rows.py).
"""

import json
import os
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple, Union

from trainers.dpc.errors import UserError
from trainers.run_dir import DONE_FILE

DPC_PREFIX = "DPC_"

# Dassl's evaluator prints "* accuracy: 81.2%"
ACC_RE = re.compile(r"^\s*\*\s*accuracy:\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*%")
# Dassl's setup_logger never overwrites: later logs are log.txt-YYYY-MM-DD-HH-MM-SS
LOG_RE = re.compile(r"^log\.txt(-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})?$")
SEED_RE = re.compile(r"^seed(\d+)$")
SHOTS_RE = re.compile(r"^shots_(\d+|all)$")  # shots_all: SHOTS=all, every training image (NUM_SHOTS 0)

Seed = Union[int, str]

_NOTES_GIVEN = set()


def note_once(text: str) -> None:
    """Print a note on stderr the first time it comes up."""
    if text not in _NOTES_GIVEN:
        _NOTES_GIVEN.add(text)
        print(text, file=sys.stderr)


# ----------------------------------------------------------------------------
# One run
# ----------------------------------------------------------------------------


def log_files(run_dir: str) -> List[str]:
    """Dassl log files of a run dir, oldest first (log.txt, then by timestamp suffix)."""
    try:
        names = [n for n in os.listdir(run_dir) if LOG_RE.match(n)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    # "log.txt" sorts before "log.txt-2024-..." and the suffixes sort chronologically
    return [os.path.join(run_dir, n) for n in sorted(names)]


def parse_log(path: str) -> Optional[float]:
    """Last "* accuracy: x%" value in one log file, or None if it has none."""
    last = None
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            for line in f:
                m = ACC_RE.match(line)
                if m:
                    last = float(m.group(1))
    except OSError:
        return None
    return last


def _number(value) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def done_record(run_dir: str) -> Optional[dict]:
    """done.json of a run as a dict, or None: no such file (unfinished, or its last attempt failed), or unreadable."""
    try:
        with open(os.path.join(run_dir, DONE_FILE), "r", encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def read_accuracy(run_dir: str) -> Optional[float]:
    """Test accuracy (%) of a finished run (one with done.json), else None.

    train.py removes done.json before it starts an attempt in a run dir and writes it when the attempt
    finishes, so the newest log is the finished attempt's: its last accuracy line wins, done.json's
    "accuracy" when it has none. Older logs belong to replaced or interrupted attempts and are not read.
    """
    record = done_record(run_dir)
    if record is None:
        return None
    logs = log_files(run_dir)
    acc = parse_log(logs[-1]) if logs else None
    return acc if acc is not None else _number(record.get("accuracy"))


def is_run_dir(path: str) -> bool:
    """True if `path` holds a Dassl log or a done.json."""
    return bool(log_files(path)) or os.path.isfile(os.path.join(path, DONE_FILE))


# ----------------------------------------------------------------------------
# The seed runs of a cfg dir
# ----------------------------------------------------------------------------


class DuplicateSeedError(UserError, ValueError):
    """Two folders of a cfg dir name the same seed (seed1 and seed01)."""


@dataclass
class SeedRuns:
    """What a cfg dir holds: finished runs by seed, seed<N> folders without done.json, and every folder left out
    with why (the unfinished ones included)."""
    finished: Dict[Seed, str] = field(default_factory=dict)
    unfinished: Dict[Seed, str] = field(default_factory=dict)
    ignored: List[Tuple[str, str]] = field(default_factory=list)


def _seed_key(name: str) -> Seed:
    m = SEED_RE.match(name)
    return int(m.group(1)) if m else name


def _sort_key(seed: Seed) -> Tuple[int, Union[int, str]]:
    return (0, seed) if isinstance(seed, int) else (1, str(seed))


def _subdirs(path: str) -> List[str]:
    try:
        return sorted(n for n in os.listdir(path) if os.path.isdir(os.path.join(path, n)))
    except OSError:
        return []


def _any_seed_folder(names: List[str]) -> bool:
    return any(n.startswith("seed") for n in names)


def holds_seeds(path: str) -> bool:
    """True if `path` is a cfg dir: it has a seed* child folder (seed<N>, or a copy such as seed1_old)."""
    return _any_seed_folder(_subdirs(path))


UNFINISHED = "no done.json: not finished, or its last attempt failed; nothing in it is read"


def seed_runs(path: str) -> SeedRuns:
    """The runs of a cfg dir: its seed<N>/ children, or `path` itself when it has no seed* child (a run dir).

    Only a finished run (done.json) counts; every other folder is ignored, and said so once on stderr.
    Raises DuplicateSeedError when two folders name one seed (seed1 and seed01).
    """
    out = SeedRuns()
    if not os.path.isdir(path):
        return out
    names = _subdirs(path)
    if _any_seed_folder(names):
        candidates = {}
        for name in names:
            child = os.path.join(path, name)
            if not SEED_RE.match(name):
                out.ignored.append((child, "not a seed<N> folder"))
                continue
            other = candidates.setdefault(_seed_key(name), name)
            if other != name:
                raise DuplicateSeedError(f"{path}: {other} and {name} are both seed {_seed_key(name)}; keep one "
                                         "of them there (move or rename the other) so that each seed counts once")
        candidates = {seed: os.path.join(path, name) for seed, name in candidates.items()}
    else:
        candidates = {_seed_key(os.path.basename(os.path.normpath(path))): path}
    for seed in sorted(candidates, key=_sort_key):
        run = candidates[seed]
        if done_record(run) is None:
            out.unfinished[seed] = run
            out.ignored.append((run, UNFINISHED))
        else:
            out.finished[seed] = run
    for folder, why in out.ignored:
        note_once(f"ignored: {folder} ({why})")
    return out


def collect(path: str, include_missing: bool = False) -> Dict[Seed, Optional[float]]:
    """Accuracy per seed of the finished runs under `path` (a run dir or a dir of seed<N>/ run dirs).

    Keys are seed numbers (int) for "seed<N>" dirs, else the dir name. Seeds
    without a result are left out unless `include_missing` (then value None).
    """
    runs = seed_runs(path)
    out = {}
    for seed, run in runs.finished.items():
        acc = read_accuracy(run)
        if acc is None:
            note_once(f"ignored: {run} (finished without an accuracy in its newest log or done.json)")
        if acc is not None or include_missing:
            out[seed] = acc
    if include_missing:
        out.update(dict.fromkeys(runs.unfinished))
    return dict(sorted(out.items(), key=lambda kv: _sort_key(kv[0])))


def find_result_dirs(path: str) -> List[str]:
    """Dirs at or below `path` that are run dirs or hold seed*/ run dirs.

    `path` itself is returned when it is one; otherwise the tree is walked
    (not descending into seed dirs) so that e.g. a dataset dir expands into
    one entry per trainer/cfg.
    """
    if holds_seeds(path) or is_run_dir(path):
        return [path]
    found = []
    for cur, dirs, _ in os.walk(path):
        dirs.sort()
        if cur != path and (holds_seeds(cur) or is_run_dir(cur)):
            found.append(cur)
            dirs[:] = []  # its seed dirs belong to it
    return found


# ----------------------------------------------------------------------------
# Result trees
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    dataset: str
    shots: int
    trainer: str
    cfg: str


def backbone_of(trainer: str) -> str:
    """"DPC_CoOp" -> "CoOp"; other names unchanged."""
    return trainer[len(DPC_PREFIX):] if trainer.startswith(DPC_PREFIX) else trainer


def backbone_sort_key(trainer: str) -> Tuple[str, int]:
    # backbone name first, then X before DPC_X
    return (backbone_of(trainer).lower(), int(trainer.startswith(DPC_PREFIX)))


def scan_side(top: str, datasets, shots) -> Dict[Key, str]:
    """<top>/<dataset>/shots_<N>/<trainer>/<cfg> dirs, filtered by dataset and shots."""
    out = {}
    for ds in _subdirs(top):
        if datasets and ds not in datasets:
            continue
        for sd in _subdirs(os.path.join(top, ds)):
            m = SHOTS_RE.match(sd)
            count = 0 if m and m.group(1) == "all" else int(m.group(1)) if m else None
            if count is None or (shots is not None and count != shots):
                continue
            for tr in _subdirs(os.path.join(top, ds, sd)):
                for cfg in _subdirs(os.path.join(top, ds, sd, tr)):
                    out[Key(ds, count, tr, cfg)] = os.path.join(top, ds, sd, tr, cfg)
    return out


def is_base2new_root(path: str) -> bool:
    """True if `path` has a train_base/ or test_new/ subdir."""
    return any(os.path.isdir(os.path.join(path, d)) for d in ("train_base", "test_new"))


def scan_base2new(root: str, datasets: Optional[Iterable[str]] = None,
                  shots: Optional[int] = None) -> Dict[Key, Dict[str, Optional[str]]]:
    """Pair ROOT/train_base/... and ROOT/test_new/... cfg dirs by (dataset, shots, trainer, cfg).

    Returns {Key: {"base": dir or None, "new": dir or None}}, sorted by dataset,
    shots, backbone (DPC_X right after X), cfg.
    """
    datasets = set(datasets) if datasets else None
    base = scan_side(os.path.join(root, "train_base"), datasets, shots)
    new = scan_side(os.path.join(root, "test_new"), datasets, shots)
    keys = sorted(set(base) | set(new),
                  key=lambda k: (k.dataset, k.shots, backbone_sort_key(k.trainer), k.cfg))
    return {k: {"base": base.get(k), "new": new.get(k)} for k in keys}


def base2new_groups(root: str, datasets=None, shots: Optional[int] = 16) -> Dict[Tuple[str, str], Dict]:
    """{(trainer, cfgdir): {dataset: {"base": dir or None, "new": dir or None}}} under ROOT/base2new."""
    groups = defaultdict(dict)
    for key, dirs in scan_base2new(os.path.join(root, "base2new"), datasets, shots).items():
        groups[(key.trainer, key.cfg)][key.dataset] = dirs
    return dict(groups)


def xd_groups(root: str, shots: int = 16) -> Dict[Tuple[str, str], Dict]:
    """{(trainer, cfg): {"source": dir or None, "targets": {target: dir}}} under ROOT/xd."""
    groups = defaultdict(lambda: {"source": None, "targets": {}})
    for key, path in scan_side(os.path.join(root, "xd", "train_source"), {"imagenet"}, shots).items():
        groups[(key.trainer, key.cfg)]["source"] = path
    for key, path in scan_side(os.path.join(root, "xd", "test_target"), None, shots).items():
        groups[(key.trainer, key.cfg)]["targets"][key.dataset] = path
    return dict(groups)


# ----------------------------------------------------------------------------
# Values per seed of a cfg dir
# ----------------------------------------------------------------------------


def seed_results(path: Optional[str], seeds: Optional[Iterable[int]] = None) -> Dict:
    """Accuracy per seed under a cfg dir (collect), only `seeds` when given."""
    if not path:
        return {}
    wanted = set(seeds) if seeds else None
    return {s: a for s, a in collect(path).items() if wanted is None or s in wanted}


def read_train_seconds(run_dir: str) -> Optional[float]:
    """done.json "train_seconds" of one run, or None (missing file, bad JSON, older run)."""
    return _number((done_record(run_dir) or {}).get("train_seconds"))


def seed_train_seconds(path: Optional[str], seeds: Optional[Iterable[int]] = None) -> Dict:
    """train_seconds per seed under a cfg dir (None where a run has none)."""
    if not path:
        return {}
    wanted = set(seeds) if seeds else None
    runs = seed_runs(path).finished
    return {s: read_train_seconds(run) for s, run in runs.items() if wanted is None or s in wanted}


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


def configured(dirs_by_dataset: Dict[str, Dict], *keys: str) -> Optional[str]:
    """The value of a config key in the train_base runs' run_info.json ("5/8" when datasets differ, e.g. K on
    EuroSAT, which has 5 base classes); None when no run records it."""
    values = set()
    for d in dirs_by_dataset.values():
        for run in seed_runs(d["base"]).finished.values() if d.get("base") else ():
            try:
                with open(os.path.join(run, "run_info.json"), encoding="utf-8") as f:
                    node = json.load(f)["config"]
                for key in keys:
                    node = node[key]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            values.add(node)
    return "/".join(str(v) for v in sorted(values)) if values else None


def wn_sweep_results(dirs_by_dataset: Dict[str, Dict], seeds=None) -> Dict[float, Dict[str, Dict]]:
    """{w_n: {dataset: {seed: new accuracy}}} from the dpc_weight_sweep.json files of test_new runs."""
    wanted = set(seeds) if seeds else None
    out = defaultdict(lambda: defaultdict(dict))
    for ds, dirs in dirs_by_dataset.items():
        if not dirs.get("new"):
            continue
        for seed, run in seed_runs(dirs["new"]).finished.items():
            if wanted is None or seed in wanted:
                for w, acc in read_weight_sweep(run).items():
                    out[w][ds][seed] = acc
    return out
