"""Damaged or mismatching files fail with a message that names the file and the fix (no Dassl needed).

Every damaged file here is a real one cut short, as an interrupted download or copy leaves it.
"""
import json
import os

import numpy as np
import pytest
import torch
from clip.model import CLIP
from PIL import Image
from torchvision import transforms

from datasets import build_splits, get_spec
from datasets.readers import DOWNLOAD_HINT, AnnotationFileError, check_image_files
from tools.synthetic_data import make_dataset
from tools.tiny_clip import save_tiny_clip
from trainers import clip_loader
from trainers.clip_loader import CLIPWeightsError, CLIPWeightsNotFound, load_clip
from trainers.dpc.checkpoint import atomic_save, load_checkpoint, read_saved_model
from trainers.dpc.files import checkpoint_path
from trainers.dpc.image_bank import ImageBank
from trainers.dpc.image_files import IMAGE_HINT, ImageFileError, decoder_warning, image_problem, open_image
from trainers.models.vl_prompts import check_image_size


def cut(path, keep=None):
    """Keep the first ``keep`` bytes of a file (default: half of it)."""
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2 if keep is None else keep])
    return str(path)


@pytest.fixture
def eurosat(tmp_path):
    """3 classes x (3 train, 1 val, 2 test) 64-px JPEGs: cut in half, a file loses part of its image
    data but keeps its header, so PIL opens it without complaint (it decodes lazily)."""
    return make_dataset(tmp_path / "data", "eurosat", n_classes=3, train_per_class=3, image_size=64)


def eurosat_image(dataset_dir, folder, k):
    return os.path.join(dataset_dir, "2750", folder, f"{folder}_{k}.jpg")


def all_images(root):
    splits = build_splits(get_spec("EuroSAT"), str(root), log=lambda line: None)
    return [r.impath for split in (splits.train, splits.val, splits.test) for r in split]


# ---------------------------------------------------------------- images
def test_truncated_train_and_test_images_are_found_before_training(eurosat):
    train = cut(eurosat_image(eurosat, "Forest", 1))
    test = cut(eurosat_image(eurosat, "AnnualCrop", 6))
    with Image.open(train) as img:
        assert img.size == (64, 64)  # the header is intact: opening alone would not notice
    with pytest.raises(ImageFileError) as err:
        check_image_files(all_images(os.path.dirname(eurosat)))
    message = str(err.value)
    assert message.startswith("2 of 18 image files cannot be read")
    assert f"{train} (OSError: image file is truncated" in message and f"{test} (OSError" in message
    assert IMAGE_HINT in message and "re-download the dataset" in message


def test_complete_files_pass_the_check_even_with_bytes_after_the_end_marker(eurosat, tmp_path):
    padded = eurosat_image(eurosat, "Forest", 2)
    with open(padded, "ab") as f:
        f.write(os.urandom(3000))  # e.g. a camera's trailer: the image itself is complete
    png, cut_png = str(tmp_path / "a.png"), str(tmp_path / "b.png")
    for path in (png, cut_png):
        Image.new("RGB", (40, 40), (10, 200, 30)).save(path)
    cut(cut_png)
    text = str(tmp_path / "notes.jpg")
    with open(text, "w") as f:
        f.write("not an image\n")
    assert image_problem(padded) is None and image_problem(png) is None
    assert open_image(padded).size == (64, 64)
    with pytest.raises(ImageFileError) as err:
        check_image_files([padded, png, text, cut_png, png])
    message = str(err.value)
    assert message.startswith("2 of 4 image files cannot be read")  # each path is checked once
    assert f"{text} (UnidentifiedImageError" in message and f"{cut_png} (" in message
    assert padded not in message and f"{png} (" not in message


def damage_scan_data(path, length=64):
    """Zero ``length`` bytes in the middle of a JPEG's entropy-coded data: header and end marker stay intact."""
    with open(path, "rb") as f:
        data = f.read()
    middle = (data.index(b"\xff\xda") + len(data) - 2) // 2
    with open(path, "wb") as f:
        f.write(data[:middle] + bytes(length) + data[middle + length:])
    return str(path)


def test_jpeg_damaged_inside_its_scan_data_is_reported_by_the_decoder(eurosat):
    damaged, padded = eurosat_image(eurosat, "Forest", 1), eurosat_image(eurosat, "Forest", 2)
    intact = np.asarray(open_image(damaged), dtype=float)
    damage_scan_data(damaged)
    with open(padded, "ab") as f:
        f.write(os.urandom(3000))  # bytes after the end marker: the image itself is complete
    assert image_problem(damaged) is None  # header and end marker intact: the cheap check passes it ...
    noise = np.abs(np.asarray(open_image(damaged), dtype=float) - intact).mean()
    assert noise > 10  # ... and PIL decodes it without a word, to other pixels
    assert decoder_warning(damaged).startswith("Corrupt JPEG data: ")
    assert decoder_warning(padded) is None and decoder_warning(eurosat_image(eurosat, "Forest", 3)) is None
    paths = all_images(os.path.dirname(eurosat))
    assert check_image_files(paths) == []  # only the files to decode are decoded
    found = check_image_files(paths, decoded=paths)
    assert [path for path, _ in found] == [damaged] and found[0][1] == decoder_warning(damaged)


def test_decoding_a_truncated_image_names_the_file(eurosat):
    path = cut(eurosat_image(eurosat, "Forest", 1))
    with pytest.raises(ImageFileError) as err:
        open_image(path)
    message = str(err.value)
    assert message.startswith(f"cannot read image {path} (OSError: image file is truncated")
    assert message.endswith(f"). {IMAGE_HINT}")


def test_negative_image_bank_names_damaged_and_missing_files(eurosat):
    good = eurosat_image(eurosat, "Forest", 2)
    damaged = cut(eurosat_image(eurosat, "Forest", 1))
    missing = eurosat_image(eurosat, "Forest", 3)
    os.remove(missing)
    bank = ImageBank([good, damaged, missing], transforms.ToTensor())
    assert bank.load([0]).shape == (1, 3, 64, 64)
    with pytest.raises(ImageFileError, match="image file is truncated") as err:
        bank.load([0, 1])
    assert damaged in str(err.value) and IMAGE_HINT in str(err.value)
    with pytest.raises(ImageFileError, match="FileNotFoundError") as err:
        bank.load([2])
    assert missing in str(err.value)


# ---------------------------------------------------------------- annotation files
def test_truncated_split_json_names_the_file(eurosat):
    split = os.path.join(eurosat, "split_zhou_EuroSAT.json")
    cut(split)
    with pytest.raises(AnnotationFileError) as err:
        build_splits(get_spec("EuroSAT"), os.path.dirname(eurosat))
    message = str(err.value)
    assert message.startswith(f"{split}: not valid JSON (")
    assert "truncated" in message and DOWNLOAD_HINT in message


def test_split_json_with_malformed_entries_names_the_entry(eurosat):
    split = os.path.join(eurosat, "split_zhou_EuroSAT.json")
    with open(split) as f:
        data = json.load(f)
    data["test"][1] = data["test"][1][:2]  # [path, label]: the class name is missing
    with open(split, "w") as f:
        json.dump(data, f)
    with pytest.raises(AnnotationFileError, match=r'entry 1 of "test" is \[') as err:
        build_splits(get_spec("EuroSAT"), os.path.dirname(eurosat))
    assert str(err.value).startswith(split)
    with open(split, "w") as f:
        json.dump({"train": data["train"]}, f)
    with pytest.raises(AnnotationFileError, match='expected {"train"'):
        build_splits(get_spec("EuroSAT"), os.path.dirname(eurosat))


def test_truncated_fgvc_list_names_the_file_and_line(tmp_path):
    dataset_dir = make_dataset(tmp_path, "fgvc_aircraft", n_classes=3, train_per_class=2)
    listing = os.path.join(dataset_dir, "images_variant_train.txt")
    with open(listing, "rb") as f:
        data = f.read()
    last = data.rindex(b"\n", 0, len(data) - 1) + 1
    cut(listing, keep=last + 10)  # the last line ends inside its variant name: '1000009 70'
    with pytest.raises(AnnotationFileError) as err:
        build_splits(get_spec("FGVCAircraft"), str(tmp_path))
    message = str(err.value)
    assert message.startswith(f"{listing}: line 6 ('{data[last:last + 10].decode()}') is not")
    assert DOWNLOAD_HINT in message


def test_truncated_classnames_file_names_the_file(tmp_path):
    dataset_dir = make_dataset(tmp_path, "imagenet_sketch", n_classes=6, test_per_class=1)
    classnames = os.path.join(dataset_dir, "classnames.txt")
    cut(classnames)
    with pytest.raises(AnnotationFileError) as err:
        build_splits(get_spec("ImageNetSketch"), str(tmp_path))
    assert str(err.value).startswith(f"{classnames}: ") and DOWNLOAD_HINT in str(err.value)


# ---------------------------------------------------------------- CLIP weights
@pytest.mark.parametrize("jit", [False, True])
def test_truncated_clip_weights_name_the_file(tmp_path, jit):
    path = cut(save_tiny_clip(str(tmp_path / "clip.pt"), jit=jit))
    with pytest.raises(CLIPWeightsError) as err:
        load_clip("custom", path, prec="fp32")
    message = str(err.value)
    assert message.startswith(f"cannot read CLIP weights {path} (RuntimeError: ")
    assert "truncated or damaged" in message and "MODEL.BACKBONE.PATH to an intact copy" in message


def test_clip_file_of_another_architecture_is_refused(tmp_path):
    path = save_tiny_clip(str(tmp_path / "wide.pt"), width=128)
    with pytest.raises(CLIPWeightsError) as err:
        load_clip("ViT-B/16", path, prec="fp32")
    assert str(err.value) == (
        f"{path} holds a CLIP ViT, width 128, 4 layers, patch 16, 32 px; text width 128, 4 layers; embed dim 32, "
        "but MODEL.BACKBONE.NAME ViT-B/16 is a ViT, width 768, 12 layers, patch 16, 224 px; text width 512, "
        "12 layers; embed dim 512: set MODEL.BACKBONE.PATH to the ViT-B/16 weights (ViT-B-16.pt), or "
        "MODEL.BACKBONE.NAME custom to use this file's own architecture (e.g. a small test model).")
    assert load_clip("custom", path, prec="fp32").visual.conv1.out_channels == 128
    with pytest.raises(CLIPWeightsNotFound, match="custom needs MODEL.BACKBONE.PATH"):
        load_clip("custom", prec="fp32", download=False)


def meta_state(arch):
    """State dict shapes of a CLIP built with ``arch`` (meta tensors: no memory)."""
    with torch.device("meta"):
        model = CLIP(arch.embed_dim, arch.image_size, arch.vision_layers, arch.vision_width,
                     arch.patch_size or 0, 77, 49408, arch.text_width, arch.text_width // 64, arch.text_layers)
    return model.state_dict()


def test_openai_architectures_are_read_back_from_their_shapes():
    for name, arch in clip_loader.OPENAI_ARCHITECTURES.items():
        state = meta_state(arch)
        assert clip_loader.architecture_of(state) == arch, name
        clip_loader.check_architecture(name, arch)
    assert set(clip_loader.OPENAI_ARCHITECTURES) == set(clip_loader.clip.available_models())
    rn50 = clip_loader.architecture_of(meta_state(clip_loader.OPENAI_ARCHITECTURES["RN50"]))
    with pytest.raises(CLIPWeightsError, match="set MODEL.BACKBONE.NAME RN50 \\(what the file holds\\)"):
        clip_loader.check_architecture("RN101", rn50, "rn50.pt")


# ---------------------------------------------------------------- checkpoints
def test_truncated_checkpoint_names_the_file_and_the_fix(tmp_path):
    run = tmp_path / "run"
    path = str(run / "prompt_learner" / "model.pth.tar-2")
    atomic_save({"state_dict": {"ctx": torch.randn(4, 64)}, "epoch": 2}, path)
    assert checkpoint_path(str(run), "prompt_learner", -1) == path  # what stage 2 reads as stage 1
    assert load_checkpoint(path)["epoch"] == 2
    cut(path)
    for read in (lambda: load_checkpoint(path), lambda: read_saved_model(str(run), "prompt_learner", 2)):
        with pytest.raises(ValueError) as err:
            read()
        message = str(err.value)
        assert message.startswith(f"cannot read checkpoint {path} (RuntimeError: ")
        assert "Re-run the training that writes it" in message and "DPC.STAGE1_DIR" in message
    torch.save([1, 2], path)
    with pytest.raises(ValueError, match="it holds a list, not a checkpoint dict"):
        load_checkpoint(path)


# ---------------------------------------------------------------- input size
def test_input_size_must_be_the_clip_input_size(tiny_clip):
    check_image_size((32, 32), tiny_clip)
    check_image_size(32, tiny_clip)
    with pytest.raises(ValueError) as err:
        check_image_size((224, 224), tiny_clip, "/models/tiny.pt")
    assert str(err.value).startswith("INPUT.SIZE is (224, 224) but the CLIP image encoder of /models/tiny.pt "
                                     "takes 32x32 images")
    assert 'set INPUT.SIZE "(32, 32)"' in str(err.value)
    with pytest.raises(ValueError, match=r"INPUT.SIZE is \(32, 48\)"):
        check_image_size((32, 48), tiny_clip)


# ---------------------------------------------------------------- few-shot
def test_classes_with_fewer_images_than_shots_are_named_in_one_warning(eurosat):
    split = os.path.join(eurosat, "split_zhou_EuroSAT.json")
    with open(split) as f:
        data = json.load(f)
    forest = [entry for entry in data["train"] if entry[2] == "Forest"]
    data["train"] = [entry for entry in data["train"] if entry not in forest[1:]]  # Forest keeps one image
    with open(split, "w") as f:
        json.dump(data, f)
    for attempt in ("sampled", "cached"):
        lines = []
        splits = build_splits(get_spec("EuroSAT"), os.path.dirname(eurosat), num_shots=2, seed=1, log=lines.append)
        warnings = [line for line in lines if line.startswith("WARNING")]
        assert warnings == ["WARNING: DATASET.NUM_SHOTS is 2 but 1 of 3 classes have fewer train images and keep "
                            "all they have: Forest (1)"], attempt
        assert sorted(r.classname for r in splits.train) == ["Annual Crop Land"] * 2 + ["Forest"] + [
            "Herbaceous Vegetation Land"] * 2
    lines = []
    build_splits(get_spec("EuroSAT"), os.path.dirname(eurosat), num_shots=1, seed=1, log=lines.append)
    assert not [line for line in lines if line.startswith("WARNING")]
