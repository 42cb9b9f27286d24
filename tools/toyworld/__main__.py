"""python -m tools.toyworld --root DATA_ROOT [--seed 0] [--variant toyworld_wide]: write the ToyWorld dataset."""
import argparse

from .dataset import SPLIT_COUNTS, write_toyworld
from .vocab import VARIANTS


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tools.toyworld",
        description="Write the ToyWorld dataset (50 colour-shape classes, CoOp layout) under DATA_ROOT/toyworld, or "
                    "its 100-class variant under DATA_ROOT/toyworld_wide; nothing is rewritten when the folder "
                    "already holds this seed and generator version.")
    parser.add_argument("--root", required=True, help="data root (DATASET.ROOT)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="toyworld",
                        help="toyworld: 25 base + 25 new classes sharing no word; toyworld_wide: 50 + 50, every pair")
    for split, count in SPLIT_COUNTS.items():
        parser.add_argument(f"--{split}", type=int, default=count, help=f"{split} images per class ({count})")
    args = parser.parse_args(argv)
    counts = {split: getattr(args, split) for split in SPLIT_COUNTS}
    if min(counts.values()) < 1:
        parser.error("every split needs at least one image per class")
    print(write_toyworld(args.root, args.seed, counts, variant=args.variant))


if __name__ == "__main__":
    main()
