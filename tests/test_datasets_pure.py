"""Dataset readers, few-shot sampling, caching and base/new splits, without Dassl."""

import json
import os
import pickle
import random
import subprocess
import sys

import pytest

from datasets import SPECS, DatasetNotFoundError, build_splits, config_files, get_spec
from datasets.fewshot import fewshot_cache_path, load_or_create_fewshot, sample_fewshot
from datasets.readers import read_classnames, read_fgvc_split, read_split_json
from datasets.records import Record, as_record
from datasets.subsample import select_labels, subsample_classes
from tools.synthetic_data import DATASETS, canonical_name, main, make_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, TRAIN, VAL, TEST = 6, 4, 1, 2


def quiet(*_):
    pass


def load(root, name, **kwargs):
    kwargs.setdefault("log", quiet)
    return build_splits(get_spec(name), str(root), **kwargs)


def by_label(items):
    out = {}
    for item in items:
        out.setdefault(item.label, []).append(item)
    return out


# ---------------------------------------------------------------- readers

EXPECTED = {
    # stem: (image path prefix inside the dataset folder, first class name)
    "eurosat": ("2750/AnnualCrop/", "Annual Crop Land"),
    "oxford_pets": ("images/Abyssinian_", "abyssinian"),
    "dtd": ("images/banded/", "banded"),
    "caltech101": ("101_ObjectCategories/Faces/", "face"),
    "fgvc_aircraft": ("images/", "707-320"),
    "imagenet": ("images/train/n01440764/", "tench"),
}


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_real_layouts_are_read(tmp_path, stem):
    dataset_dir = make_dataset(tmp_path, stem, n_classes=N, train_per_class=TRAIN,
                               val_per_class=VAL, test_per_class=TEST)
    s = load(tmp_path, stem)
    assert s.dataset_dir == dataset_dir
    n_val = TEST if stem == "imagenet" else VAL  # ImageNet: val is the test split
    assert (len(s.train), len(s.val), len(s.test)) == (N * TRAIN, N * n_val, N * TEST)
    assert s.full_train is s.train
    for split in (s.train, s.val, s.test):
        groups = by_label(split)
        assert sorted(groups) == list(range(N))
        for items in groups.values():
            assert len({item.classname for item in items}) == 1
        for item in split:
            assert os.path.isabs(item.impath) and os.path.isfile(item.impath)
    prefix, first = EXPECTED[stem]
    assert by_label(s.train)[0][0].impath.startswith(os.path.join(dataset_dir, prefix))
    assert by_label(s.test)[0][0].classname == first
    if stem == "imagenet":
        assert s.val is s.test
        assert os.path.isfile(os.path.join(dataset_dir, "preprocessed.pkl"))
        assert [r.impath for r in load(tmp_path, stem).train] == [r.impath for r in s.train]


def test_all_fifteen_datasets_load(tmp_path):
    assert len(DATASETS) == 15 and set(SPECS) == {get_spec(stem).name for stem in DATASETS} | {"ToyWorld", "ToyWorldWide"}
    for stem in DATASETS:
        make_dataset(tmp_path, stem, n_classes=3, train_per_class=2, val_per_class=1,
                     test_per_class=1)
        spec = get_spec(stem)
        s = load(tmp_path, spec.name)
        assert len(s.test) == 3 and sorted(by_label(s.test)) == [0, 1, 2], stem
        if spec.test_only:
            assert s.val is None and s.train is s.test
        else:
            assert len(s.train) == 6


def test_hand_written_files(tmp_path):
    split = {"train": [["a/1.jpg", 0, "cat"], ["b/2.jpg", 1, "big dog"]],
             "val": [["a/3.jpg", 0, "cat"]], "test": []}
    path = tmp_path / "split.json"
    path.write_text(json.dumps(split))
    train, val, test = read_split_json(str(path), "/data/img")
    assert train == [Record("/data/img/a/1.jpg", 0, "cat"),
                     Record("/data/img/b/2.jpg", 1, "big dog")]
    assert val == [Record("/data/img/a/3.jpg", 0, "cat")] and test == []

    lst = tmp_path / "images_variant_test.txt"
    lst.write_text("0062765 Cessna 172\n1234567 DC-3\n\n")
    items = read_fgvc_split(str(lst), "/x/images", {"DC-3": 0, "Cessna 172": 1})
    assert items == [Record("/x/images/0062765.jpg", 1, "Cessna 172"),
                     Record("/x/images/1234567.jpg", 0, "DC-3")]

    names = tmp_path / "classnames.txt"
    names.write_text("n01440764 tench\nn01484850 great white shark\n")
    assert list(read_classnames(str(names)).items()) == [
        ("n01440764", "tench"), ("n01484850", "great white shark")]


def test_imagenet_a_skips_readme_and_uses_subset_labels(tmp_path):
    make_dataset(tmp_path, "imagenet_a", n_classes=3)
    image_dir = tmp_path / "imagenet-adversarial" / "imagenet-a"
    assert (image_dir / "README.txt").exists()
    with open(tmp_path / "imagenet-adversarial" / "classnames.txt") as f:
        assert len(f.readlines()) == 5  # more names than folders, like the real one
    s = load(tmp_path, "ImageNetA")
    assert sorted(by_label(s.test)) == [0, 1, 2]


# ---------------------------------------------------------------- few-shot

def test_fewshot_counts_determinism_and_cache(tmp_path):
    dataset_dir = make_dataset(tmp_path, "eurosat", n_classes=N, train_per_class=6,
                               val_per_class=5, test_per_class=1)
    a = load(tmp_path, "eurosat", num_shots=2, seed=1)
    cache = os.path.join(dataset_dir, "split_fewshot", "shot_2-seed_1.pkl")
    assert cache == fewshot_cache_path(dataset_dir, 2, 1) and os.path.isfile(cache)
    assert not [f for f in os.listdir(os.path.dirname(cache)) if f.startswith(".tmp")]
    assert {k: len(v) for k, v in by_label(a.train).items()} == {i: 2 for i in range(N)}
    assert {k: len(v) for k, v in by_label(a.val).items()} == {i: 2 for i in range(N)}
    assert len(a.test) == N and len(a.full_train) == 6 * N

    # val keeps min(shots, 4) per class
    b = load(tmp_path, "eurosat", num_shots=16, seed=1)
    assert len(b.train) == 6 * N and len(b.val) == 4 * N

    # same seed -> same subset, even without the cache; other seed -> other subset
    os.remove(cache)
    again = load(tmp_path, "eurosat", num_shots=2, seed=1)
    assert again.train == a.train and again.val == a.val
    other = load(tmp_path, "eurosat", num_shots=2, seed=2)
    assert other.train != a.train

    # the cache is what gets used: replace it and observe
    with open(cache, "rb") as f:
        data = pickle.load(f)
    assert set(data) == {"train", "val"}
    data["train"] = data["train"][:3]
    with open(cache, "wb") as f:
        pickle.dump(data, f)
    assert load(tmp_path, "eurosat", num_shots=2, seed=1).train == a.train[:3]


def test_sample_fewshot_matches_global_random_after_seed():
    items = [Record(f"/x/{i}.jpg", label, f"c{label}") for i, label in
             enumerate([2, 0, 1, 2, 0, 1, 2, 0, 2, 2, 1, 0, 3])]
    random.seed(7)
    expected = sample_fewshot(items, 2)  # the global random module
    assert sample_fewshot(items, 2, random.Random(7)) == expected
    assert [r.label for r in expected] == [2, 2, 0, 0, 1, 1, 3]  # order of first appearance
    assert sample_fewshot(items, -1) is items


def test_cache_of_other_record_forms_and_corrupt_cache(tmp_path):
    train = [Record(f"/x/{i}.jpg", i % 2, f"c{i % 2}") for i in range(6)]
    path = str(tmp_path / "split_fewshot" / "shot_1-seed_0.pkl")
    tr, val = load_or_create_fewshot(path, train, None, 1, seed=0,
                                     store=lambda r: (r.impath, r.label, r.classname),
                                     log=quiet)
    assert len(tr) == 2 and val is None
    with open(path, "rb") as f:
        assert set(pickle.load(f)) == {"train"}  # no val split -> no val key, like ImageNet
    assert load_or_create_fewshot(path, train, None, 1, log=quiet)[0] == tr
    with open(path, "wb") as f:
        f.write(b"\x80\x05truncated")
    with pytest.warns(UserWarning, match="unreadable"):
        assert load_or_create_fewshot(path, train, None, 1, seed=0, log=quiet)[0] == tr


# ---------------------------------------------------------------- base / new

def test_base_new_split(tmp_path):
    n = 5
    make_dataset(tmp_path, "dtd", n_classes=n, train_per_class=3, val_per_class=1,
                 test_per_class=2)
    full = load(tmp_path, "dtd")
    names = {r.label: r.classname for r in full.test}
    base = load(tmp_path, "dtd", num_shots=2, seed=1, subsample="base")
    new = load(tmp_path, "dtd", num_shots=2, seed=1, subsample="new")
    for s, labels in ((base, [0, 1, 2]), (new, [3, 4])):
        for split in (s.train, s.val, s.test, s.full_train):
            assert sorted(by_label(split)) == list(range(len(labels)))
        assert {r.label: r.classname for r in s.test} == {i: names[y] for i, y in enumerate(labels)}
        assert len(s.full_train) == 3 * len(labels) and len(s.train) == 2 * len(labels)
    base_names = {r.classname for r in base.test}
    new_names = {r.classname for r in new.test}
    assert not base_names & new_names and base_names | new_names == set(names.values())
    assert len(base.test) + len(new.test) == len(full.test)


def test_subsample_helpers():
    labels = [4, 0, 2, 1, 3, 0]
    items = [as_record((f"/{i}.jpg", label, f"c{label}")) for i, label in enumerate(labels)]
    assert select_labels(items, "all") is None
    assert select_labels(items, "base") == [0, 1, 2] and select_labels(items, "new") == [3, 4]
    train, none = subsample_classes(items, None, subsample="new")
    assert none is None and [(r.label, r.classname) for r in train] == [(1, "c4"), (0, "c3")]
    with pytest.raises(ValueError, match=r"\['all', 'base', 'new'\]"):
        select_labels(items, "novel")


# ---------------------------------------------------------------- errors

def test_missing_paths_name_the_path_and_layout(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError, match="DATASETS.md") as err:
        load(missing, "eurosat")
    assert str(missing) in str(err.value) and "split_zhou_EuroSAT.json" in str(err.value)
    assert isinstance(err.value, FileNotFoundError)

    with pytest.raises(DatasetNotFoundError) as err:  # root exists, dataset folder does not
        load(tmp_path, "oxford_pets")
    assert str(tmp_path / "oxford_pets") in str(err.value)

    dataset_dir = make_dataset(tmp_path, "eurosat", n_classes=2)
    os.remove(os.path.join(dataset_dir, "split_zhou_EuroSAT.json"))
    with pytest.raises(DatasetNotFoundError) as err:
        load(tmp_path, "eurosat")
    msg = str(err.value)
    assert os.path.join(dataset_dir, "split_zhou_EuroSAT.json") in msg
    assert "2750/<Class>/<image>.jpg" in msg

    dataset_dir = make_dataset(tmp_path, "dtd", n_classes=2)
    os.rename(os.path.join(dataset_dir, "images"), os.path.join(dataset_dir, "imgs"))
    with pytest.raises(DatasetNotFoundError, match="image folder") as err:
        load(tmp_path, "dtd")
    assert os.path.join(dataset_dir, "images") in str(err.value)

    dataset_dir = make_dataset(tmp_path, "fgvc_aircraft", n_classes=2)
    os.remove(os.path.join(dataset_dir, "variants.txt"))
    with pytest.raises(DatasetNotFoundError, match="variants.txt"):
        load(tmp_path, "fgvc_aircraft")

    dataset_dir = make_dataset(tmp_path, "imagenet", n_classes=2)
    os.remove(os.path.join(dataset_dir, "classnames.txt"))
    with pytest.raises(DatasetNotFoundError, match="classnames.txt"):
        load(tmp_path, "imagenet")

    with pytest.raises(ValueError, match="base"):
        load(tmp_path, "eurosat", subsample="Base")


# ---------------------------------------------------------------- packaging

def test_pure_modules_import_without_dassl(tmp_path):
    make_dataset(tmp_path, "eurosat", n_classes=2)
    code = (
        "import sys; sys.modules['dassl'] = None\n"
        "import datasets, datasets.pipeline, datasets.fewshot, datasets.subsample\n"
        "assert not hasattr(datasets, 'CoOpDataset')\n"
        f"s = datasets.build_splits(datasets.get_spec('EuroSAT'), {str(tmp_path)!r}, 1, 0)\n"
        "assert len(s.train) == 2\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_config_files_match_registry_names():
    for name, rel in config_files().items():
        with open(os.path.join(REPO, rel)) as f:
            assert f.read().split() == ["DATASET:", "NAME:", f'"{name}"'], rel
    assert config_files()["EuroSAT"] == "configs/datasets/eurosat.yaml"


# ---------------------------------------------------------------- generator

def test_generator_is_deterministic_and_safe(tmp_path, capsys):
    def snapshot(d):
        out = {}
        for dirpath, _, files in os.walk(d):
            for name in files:
                with open(os.path.join(dirpath, name), "rb") as f:
                    out[os.path.relpath(os.path.join(dirpath, name), d)] = f.read()
        return out

    d = make_dataset(tmp_path / "a", "oxford_pets", n_classes=3, seed=3)
    first = snapshot(d)
    assert snapshot(make_dataset(tmp_path / "a", "OxfordPets", n_classes=3, seed=3)) == first
    other = snapshot(make_dataset(tmp_path / "b", "oxford_pets", n_classes=3, seed=4))
    assert other.keys() == first.keys() and other != first

    (tmp_path / "c" / "eurosat").mkdir(parents=True)  # not ours: never replaced
    with pytest.raises(FileExistsError):
        make_dataset(tmp_path / "c", "eurosat")

    main(["--root", str(tmp_path / "d"), "--dataset", "eurosat", "--classes", "2"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "d" / "eurosat")
    assert canonical_name("DescribableTextures") == "dtd"


def test_generated_images_depend_on_class(tmp_path):
    from PIL import Image

    make_dataset(tmp_path, "eurosat", n_classes=4, train_per_class=3, image_size=16)
    s = load(tmp_path, "eurosat")

    def mean_rgb(record):
        with Image.open(record.impath) as im:
            assert im.size == (16, 16) and im.mode == "RGB"
            pixels = list(im.getdata())
        return [sum(p[c] for p in pixels) / len(pixels) for c in range(3)]

    groups = by_label(s.train)
    means = {k: [mean_rgb(r) for r in v] for k, v in groups.items()}

    def dist(a, b):
        return sum((x - y) ** 2 for x, y in zip(a, b)) ** 0.5

    within = max(dist(m, ms[0]) for ms in means.values() for m in ms)
    between = min(dist(means[a][0], means[b][0]) for a in means for b in means if a < b)
    assert between > within
