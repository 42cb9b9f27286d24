"""The registered Dassl datasets, driven by a real yacs config as train.py does."""

import os
import pickle
import random

import pytest

dassl = pytest.importorskip("dassl")

from dassl.config import get_cfg_default  # noqa: E402
from dassl.data import DataManager  # noqa: E402
from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum, build_dataset  # noqa: E402

import datasets  # noqa: E402
from datasets import SPECS, DatasetNotFoundError, config_files  # noqa: E402
from tools.synthetic_data import make_dataset  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
datasets.register()


def make_cfg(root, name, shots=-1, seed=1, subsample="all"):
    cfg = get_cfg_default()
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"  # added the way CoOp's extend_cfg does
    cfg.merge_from_file(os.path.join(REPO, config_files()[name]))
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NUM_SHOTS = shots
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.SEED = seed
    cfg.VERBOSE = False
    cfg.USE_CUDA = False
    cfg.INPUT.SIZE = (32, 32)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = 4
    cfg.DATALOADER.TEST.BATCH_SIZE = 8
    cfg.freeze()
    return cfg


def paths(items):
    return [item.impath for item in items]


def test_every_dataset_is_registered():
    registered = set(DATASET_REGISTRY.registered_names())
    assert set(SPECS) <= registered and len(SPECS) == 17  # the 15 CoOp datasets and the two ToyWorlds


@pytest.mark.parametrize("name", ["EuroSAT", "FGVCAircraft", "ImageNet", "ImageNetR"])
def test_dassl_dataset_from_cfg(tmp_path, name):
    make_dataset(tmp_path, name, n_classes=4, train_per_class=3, val_per_class=1, test_per_class=2)
    ds = build_dataset(make_cfg(tmp_path, name))
    assert type(ds).__name__ == name and isinstance(ds, DatasetBase)
    assert ds.num_classes == 4 and len(ds.classnames) == 4
    assert all(isinstance(d, Datum) for d in ds.train_x + ds.test)
    assert ds.full_train is ds.train_x
    if SPECS[name].test_only:
        assert ds.val is None and len(ds.test) == 8
    else:
        assert len(ds.train_x) == 12 and len(ds.test) == 8
        assert ds.val is ds.test if name == "ImageNet" else len(ds.val) == 4


def test_fewshot_matches_dassl_generate_fewshot_dataset(tmp_path):
    make_dataset(tmp_path, "oxford_pets", n_classes=5, train_per_class=6, val_per_class=5,
                 test_per_class=1)
    for seed in (1, 2):
        full = build_dataset(make_cfg(tmp_path, "OxfordPets"))
        random.seed(seed)  # what Dassl's set_random_seed does before building the data
        want_train = full.generate_fewshot_dataset(full.train_x, num_shots=3)
        want_val = full.generate_fewshot_dataset(full.val, num_shots=3)
        got = build_dataset(make_cfg(tmp_path, "OxfordPets", shots=3, seed=seed))
        assert paths(got.train_x) == paths(want_train)
        assert paths(got.val) == paths(want_val)
        assert paths(got.full_train) == paths(full.train_x)
    assert paths(got.train_x) != paths(build_dataset(
        make_cfg(tmp_path, "OxfordPets", shots=3, seed=1)).train_x)


def test_cache_is_upstream_compatible(tmp_path):
    dataset_dir = make_dataset(tmp_path, "dtd", n_classes=4, train_per_class=5)
    cache = os.path.join(dataset_dir, "split_fewshot", "shot_2-seed_3.pkl")
    ds = build_dataset(make_cfg(tmp_path, "DescribableTextures", shots=2, seed=3))
    with open(cache, "rb") as f:
        data = pickle.load(f)  # what upstream CoOp reads: lists of Datum
    assert all(isinstance(d, Datum) for d in data["train"] + data["val"])
    assert paths(data["train"]) == paths(ds.train_x)

    # an upstream-written cache (Datum lists) is used as is
    picked = [d for d in ds.full_train if d.label in (0, 1)][:3]
    with open(cache, "wb") as f:
        pickle.dump({"train": picked, "val": data["val"]}, f)
    again = build_dataset(make_cfg(tmp_path, "DescribableTextures", shots=2, seed=3))
    assert paths(again.train_x) == paths(picked)


def test_base_and_new_through_cfg(tmp_path):
    make_dataset(tmp_path, "eurosat", n_classes=7)
    base = build_dataset(make_cfg(tmp_path, "EuroSAT", shots=2, subsample="base"))
    new = build_dataset(make_cfg(tmp_path, "EuroSAT", shots=2, subsample="new"))
    assert (base.num_classes, new.num_classes) == (4, 3)
    assert base.classnames[0] == "Annual Crop Land" and new.classnames[0] == "Industrial Buildings"
    assert not set(base.classnames) & set(new.classnames)
    assert {d.label for d in new.test} == {0, 1, 2}
    assert len(base.full_train) == 4 * 4 and len(base.train_x) == 4 * 2
    with pytest.raises(ValueError, match="all"):
        build_dataset(make_cfg(tmp_path, "EuroSAT", subsample="novel"))


@pytest.mark.filterwarnings("ignore:No file found")
def test_errors_through_cfg(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="split_zhou_EuroSAT.json"):
        build_dataset(make_cfg(tmp_path / "missing", "EuroSAT"))
    dataset_dir = make_dataset(tmp_path, "eurosat", n_classes=2)
    victim = os.path.join(dataset_dir, "2750", "Forest", "Forest_1.jpg")
    os.remove(victim)
    with pytest.raises(DatasetNotFoundError, match="Forest_1.jpg"):
        build_dataset(make_cfg(tmp_path, "EuroSAT"))


def test_data_manager_yields_a_batch(tmp_path):
    make_dataset(tmp_path, "eurosat", n_classes=4, train_per_class=4)
    dm = DataManager(make_cfg(tmp_path, "EuroSAT", shots=2, subsample="base"))
    assert dm.num_classes == 2 and dm.lab2cname == {0: "Annual Crop Land", 1: "Forest"}
    batch = next(iter(dm.train_loader_x))
    assert tuple(batch["img"].shape) == (4, 3, 32, 32)
    assert set(batch["label"].tolist()) <= {0, 1}
    test_batch = next(iter(dm.test_loader))
    assert tuple(test_batch["img"].shape[1:]) == (3, 32, 32)
