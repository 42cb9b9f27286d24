"""Dassl-style entry point: train or evaluate a prompt learner (CoOp, CoCoOp, KgCoOp, MaPLe, IVLP, PromptSRC, PromptKD, DPC_*, DePT_*)."""
import argparse
import json
import os
import platform
import sys
import time

from trainers import console  # first: it hides the deprecation warnings the imports below would print

from dassl.config import get_cfg_default  # yacs only: deciding whether a run must happen needs no torch

from trainers import run_dir
from trainers.config import extend_cfg
from trainers.dpc.errors import ConfigError
from trainers.dpc.files import atomic_write_text
from trainers.fit_clip import fit
from trainers.options import check_options, check_run
from trainers.stage1_run import check_stage1_run


def load_components():
    """Import torch, Dassl's engine, our datasets and trainers (registering them): seconds, so only when a
    run really happens (a finished run is skipped without it)."""
    import datasets
    import trainers.cocoop  # noqa: F401
    import trainers.coop  # noqa: F401
    import trainers.dept_trainers  # noqa: F401
    import trainers.dpc_trainers  # noqa: F401
    import trainers.ivlp  # noqa: F401
    import trainers.kgcoop  # noqa: F401
    import trainers.maple  # noqa: F401
    import trainers.promptkd  # noqa: F401
    import trainers.promptsrc  # noqa: F401

    datasets.register()


def build(cfg):
    """The registered trainer for ``cfg`` (Dassl's ``build_trainer`` after ``load_components``)."""
    load_components()
    from dassl.engine import build_trainer

    return build_trainer(cfg)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=str, default="", help="path to the dataset root")
    parser.add_argument("--output-dir", type=str, default="", help="output directory")
    parser.add_argument("--resume", type=str, default="", help="checkpoint directory to resume from")
    parser.add_argument("--seed", type=int, default=-1, help="only positive value enables a fixed seed")
    parser.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    parser.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    parser.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    parser.add_argument("--config-file", type=str, default="", help="path to the trainer config file")
    parser.add_argument("--dataset-config-file", type=str, default="", help="path to the dataset config file")
    parser.add_argument("--trainer", type=str, default="", help="name of the trainer")
    parser.add_argument("--backbone", type=str, default="", help="name of the CNN backbone")
    parser.add_argument("--head", type=str, default="", help="name of the head")
    parser.add_argument("--eval-only", action="store_true", help="evaluation only")
    parser.add_argument("--model-dir", type=str, default="", help="load model from this directory for eval-only mode")
    parser.add_argument("--load-epoch", type=int, help="load model weights at this epoch for evaluation")
    parser.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    parser.add_argument("--check-only", action="store_true",
                        help="check the resolved options (and DPC.TOPK against the dataset's classes) and exit: "
                             "no torch, nothing written (the scripts check every stage this way first)")
    parser.add_argument("--force", action="store_true",
                        help="redo an evaluation (--eval-only) that already finished in --output-dir; start over a "
                             "run recorded there with other settings, weights, data or code")
    parser.add_argument(console.FLAG, action="store_true",
                        help=f"print the whole log on the terminal too (or set {console.ENV}=1)")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                        help="modify config options using the command-line (KEY VALUE pairs)")
    return parser.parse_args(argv)


def reset_cfg(cfg, args):
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if args.seed >= 0:  # 0 is a seed too; the default -1 keeps the config's
        cfg.SEED = args.seed
    if args.source_domains:
        cfg.DATASET.SOURCE_DOMAINS = args.source_domains
    if args.target_domains:
        cfg.DATASET.TARGET_DOMAINS = args.target_domains
    if args.transforms:
        cfg.INPUT.TRANSFORMS = args.transforms
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone
    if args.head:
        cfg.MODEL.HEAD.NAME = args.head


def setup_cfg(args, notes=None):
    """The run's config; ``notes`` (a list) receives what was fitted to the machine and a custom CLIP."""
    cfg = get_cfg_default()
    extend_cfg(cfg)
    for path in (args.dataset_config_file, args.config_file):
        if path:
            if not os.path.isfile(path):
                raise ConfigError(f"config file not found: {path}")
            try:
                cfg.merge_from_file(path)
            except (KeyError, ValueError, AssertionError) as err:
                raise ConfigError(f"{path}: {err} (yacs; check the key's spelling and the value's type)") from err
    reset_cfg(cfg, args)
    try:
        cfg.merge_from_list(args.opts or [])
    except (KeyError, ValueError, AssertionError) as err:  # yacs: unknown key, bad value or type
        raise ConfigError(f"bad option on the command line: {err} (options are KEY VALUE pairs of existing "
                          "keys; the value's type must be the default's, e.g. 1.0 for a float)") from err
    found = fit(cfg)
    if notes is not None:
        notes.extend(found)
    cfg.freeze()
    return cfg


def default_settings() -> dict:
    """Every config key at its default (a key newer than a recorded run is unchanged at this value)."""
    cfg = get_cfg_default()
    extend_cfg(cfg)
    return run_dir.flat_settings(cfg)


def versions() -> dict:
    """Python and package versions, plus this repository's commit when it is a git checkout."""
    from importlib import metadata

    info = {"python": platform.python_version()}
    for package in ("torch", "torchvision", "openai-clip", "clip-anytorch", "dassl", "yacs"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    here = os.path.dirname(os.path.abspath(__file__))
    commit = os.popen(f"git -C '{here}' rev-parse HEAD 2>/dev/null").read().strip()
    if commit:
        info["dpc_commit"] = commit
    return info


def write_run_info(cfg, name: str = "run_info.json"):
    """Record what produced an output directory: command, config, versions (a resumed run adds a file)."""
    path = os.path.join(cfg.OUTPUT_DIR, name)
    if os.path.exists(path):
        stem, ext = os.path.splitext(path)
        path = f"{stem}-{time.strftime('%Y-%m-%d-%H-%M-%S')}{ext}"
    info = {"command": " ".join([sys.executable] + sys.argv), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "versions": versions(), "config": json.loads(json.dumps(cfg, default=str))}
    atomic_write_text(path, json.dumps(info, indent=2) + "\n")


def final_accuracy(trainer):
    """Accuracy of the trainer's last evaluation (Dassl's Classification evaluator keeps the counts)."""
    evaluator = getattr(trainer, "evaluator", None)
    total = getattr(evaluator, "_total", 0)
    return round(100.0 * evaluator._correct / total, 4) if total else None


def main(args):
    notes = []
    cfg = setup_cfg(args, notes)
    if args.check_only:
        check_run(cfg, args.eval_only)
        return
    check_options(cfg)
    if cfg.TRAINER.NAME.startswith("DPC_") and cfg.DPC.STAGE1_DIR and not args.eval_only:
        notes.extend(check_stage1_run(cfg))
    current = run_dir.fingerprint(cfg, args.eval_only, args.model_dir, args.load_epoch)
    defaults = default_settings()
    if already_done(cfg, run_dir.previous_run(cfg.OUTPUT_DIR, current, defaults, args.force), args):
        return
    load_components()
    from dassl.engine import TRAINER_REGISTRY

    if cfg.TRAINER.NAME not in TRAINER_REGISTRY.registered_names():
        raise ConfigError(f"unknown trainer {cfg.TRAINER.NAME!r} (--trainer); registered: "
                          f"{', '.join(sorted(TRAINER_REGISTRY.registered_names()))}")
    with run_dir.exclusive(cfg.OUTPUT_DIR):
        previous = run_dir.previous_run(cfg.OUTPUT_DIR, current, defaults, args.force)  # again: the directory is ours
        if already_done(cfg, previous, args):
            return
        if previous == run_dir.REPLACE:
            print(f"[{cfg.TRAINER.NAME}] starting over in {cfg.OUTPUT_DIR} (--force / FORCE=1): the run recorded "
                  "there had other settings, weights, data or code")
            run_dir.start_over(cfg.OUTPUT_DIR)
        run_dir.forget_finished(cfg.OUTPUT_DIR)  # (a finished run here is an evaluation redone with --force)
        if previous == run_dir.INTERRUPTED:
            print(f"[{cfg.TRAINER.NAME}] resuming the interrupted run in {cfg.OUTPUT_DIR}")
        run_dir.record(cfg.OUTPUT_DIR, current)
        run(cfg, args, notes)


def already_done(cfg, previous: str, args) -> bool:
    """True (and says so) when ``previous`` is a finished run to reuse; --force redoes evaluations."""
    if previous not in (run_dir.FINISHED, run_dir.UNVERSIONED) or (args.force and args.eval_only):
        return False
    if previous == run_dir.UNVERSIONED:
        print(run_dir.unversioned_notice(cfg.OUTPUT_DIR))
    else:
        print(f"[{cfg.TRAINER.NAME}] finished run with the same settings found in {cfg.OUTPUT_DIR} (skipped)")
    return True


def run(cfg, args, notes=()):
    """Train or evaluate in the (locked) output directory and mark it finished."""
    terminal = console.Console(console.verbose_requested(args.verbose))
    terminal.start(cfg, eval_only=args.eval_only)  # stage header; quiet: only progress and results from here
    import torch
    from dassl.utils import collect_env_info, set_random_seed, setup_logger

    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    setup_logger(cfg.OUTPUT_DIR)
    if torch.cuda.is_available() and cfg.USE_CUDA:
        torch.backends.cudnn.benchmark = True
    for note in notes:  # what setup_cfg fitted (shown in quiet mode too)
        print(note)
    print("Collecting env info ...")
    print(f"** System info **\n{collect_env_info()}\n")
    write_run_info(cfg)

    trainer = build(cfg)
    # the dataset is built: a first run has just written its few-shot cache, which the fingerprint hashes
    run_dir.record(cfg.OUTPUT_DIR, run_dir.fingerprint(cfg, args.eval_only, args.model_dir, args.load_epoch))
    started = time.monotonic()
    terminal.attach(trainer)  # quiet: a training progress bar
    if args.eval_only:
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        trainer.test()
    elif not args.no_train:
        trainer.train()
    else:
        return
    result = {"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "accuracy": final_accuracy(trainer),
              "eval_only": bool(args.eval_only), "model_dir": args.model_dir, "load_epoch": args.load_epoch,
              # this process's training/evaluation, after the build (a resumed run: since it resumed)
              "train_seconds": round(time.monotonic() - started, 3),
              # training images trained on although their JPEG data is damaged (DATASET.IMAGE_WARNINGS warn)
              "image_warnings": getattr(trainer.dm.dataset, "image_warnings", [])}
    atomic_write_text(os.path.join(cfg.OUTPUT_DIR, run_dir.DONE_FILE), json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    arguments = parse_args()
    sys.exit(console.exit_on_user_error(main, arguments, console.verbose_requested(arguments.verbose)))
