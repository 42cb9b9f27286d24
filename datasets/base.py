"""The thin Dassl-facing layer: one `DatasetBase` subclass shared by all datasets.

All reading, few-shot sampling and class subsampling happens in the pure
modules (pipeline.py and friends); this class only turns records into
Dassl `Datum` objects and checks that the images Dassl will load can be read.
"""

import os
import time

from dassl.data.datasets import DatasetBase, Datum

from .pipeline import build_splits
from trainers.dpc.image_files import IMAGE_HINT, ImageFileError

from .readers import DatasetNotFoundError, check_image_files, listed


def to_datum(record):
    """Record -> Dassl Datum (Datum checks that the image file exists)."""
    try:
        return Datum(impath=record.impath, label=int(record.label),
                     domain=record.domain, classname=record.classname)
    except AssertionError:
        raise DatasetNotFoundError(
            record.impath,
            "image file (listed in a split file or a cached .pkl; if the data moved, "
            "delete split_fewshot/*.pkl and preprocessed.pkl in the dataset folder)",
        ) from None


class CoOpDataset(DatasetBase):
    """Base of every registered dataset; subclasses only set `spec`.

    Reads cfg.DATASET.ROOT, cfg.DATASET.NUM_SHOTS, cfg.SEED and
    cfg.DATASET.SUBSAMPLE_CLASSES (all|base|new, default all). Besides Dassl's
    train_x / val / test it offers `full_train`: the whole train split after
    class subsampling, before few-shot sampling. Every image of train_x, val
    and test is checked before training (header and end marker, see
    `readers.check_image_files`), so a damaged file stops the run at once; the
    training images are also decoded in full, and JPEG data the decoder reports
    damaged stops it too (DATASET.IMAGE_WARNINGS warn: trains on, naming them in
    `image_warnings`).
    """

    spec = None  # a datasets.specs.DatasetSpec

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.spec is not None:
            cls.dataset_dir = cls.spec.folder

    def __init__(self, cfg):
        splits = build_splits(
            self.spec,
            cfg.DATASET.ROOT,
            num_shots=cfg.DATASET.NUM_SHOTS,
            seed=cfg.SEED,
            subsample=cfg.DATASET.get("SUBSAMPLE_CLASSES", "all"),
            store=to_datum,
        )
        self.dataset_dir = splits.dataset_dir
        self.split_fewshot_dir = os.path.join(splits.dataset_dir, "split_fewshot")
        self._converted = {}  # id(record list) -> Datum list; shared lists convert once
        self._splits = splits
        super().__init__(
            train_x=self._datums(splits.train),
            val=self._datums(splits.val),
            test=self._datums(splits.test),
        )
        start = time.time()
        paths = [r.impath for split in (splits.train, splits.val or [], splits.test) for r in split]
        train = [] if self.spec.test_only else [r.impath for r in splits.train]
        warned = check_image_files(paths, decoded=train)
        print(f"Checked {len(set(paths)):,} image files ({len(set(train)):,} training images decoded in full) "
              f"in {time.time() - start:.1f} s")
        self.image_warnings = self._decoder_warnings(warned, cfg.DATASET.get("IMAGE_WARNINGS", "error"))
        if cfg.DATASET.NUM_SHOTS < 1:
            print(f"DATASET.NUM_SHOTS {cfg.DATASET.NUM_SHOTS}: all {len(splits.train):,} training images, no few-shot "
                  "sampling")

    @staticmethod
    def _decoder_warnings(warned, policy):
        """Training images whose JPEG data is damaged: an error, or (DATASET.IMAGE_WARNINGS warn) their paths."""
        if not warned:
            return []
        text = f"{len(warned)} training images hold damaged JPEG data, which PIL decodes to noise without a word"
        if policy != "warn":
            raise ImageFileError(f"{text}:\n{listed(warned)}\n{IMAGE_HINT} (DATASET.IMAGE_WARNINGS warn trains on "
                                 "them anyway, naming them in the log and in done.json)")
        # one line: the quiet terminal shows it whole
        print(f"WARNING: {text}; training on them (DATASET.IMAGE_WARNINGS warn): "
              + "; ".join(listed(warned).strip().split("\n  ")))
        return [path for path, _ in warned]

    def _datums(self, records):
        if records is None:
            return None
        key = id(records)
        if key not in self._converted:
            self._converted[key] = [to_datum(r) for r in records]
        return self._converted[key]

    @property
    def base_classnames(self):
        """Names of the dataset's base classes, also when the new or all classes are loaded."""
        return self._splits.base_classnames

    @property
    def all_classnames(self):
        """Names of every class of the dataset (base classes first), whatever the subsample."""
        return self._splits.all_classnames

    @property
    def all_train(self):
        """Whole train split of every class (Datum list, labels over all classes), converted on first use."""
        return self._datums(self._splits.all_train)

    @property
    def full_train(self):
        """Whole train split (Datum list), converted on first use."""
        return self._datums(self._splits.full_train)
