"""The toy world (tools/toyworld), its Dassl dataset ToyWorld and the toy CLIP's pretraining (tools/pretrain_clip)."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import ROOT
from tools import pretrain_clip
from tools.pretrain_clip import Recipe, SceneSampler, ensure_pretrained, pretrain
from trainers.dpc.errors import UserError
from tools.toyworld import dataset as toy_dataset
from tools.toyworld.captions import caption_table, shape_caption_table
from tools.toyworld.dataset import render_split, write_toyworld
from tools.toyworld.vocab import (ALL_PAIRS, BASE_CLASSES, CLASS_NAMES, COLOURS, NEW_CLASSES, SEEN_PAIRS,
                                  TOYWORLD, TOYWORLD_WIDE, UNNAMED_COLOURS, UNSEEN_PAIRS,
                                  pair_name)
from tools.toyworld.zero_shot import normalize
from trainers.encoders import count_tokens

SMALL = {"train": 2, "val": 1, "test": 2}
SPLIT_FILE = TOYWORLD.split_file  # images per class in these tests


def files_of(folder):
    """Relative path -> bytes of every file under ``folder``."""
    found = {}
    for base, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = f.read()
    return found


def test_vocabulary_base_and_new_share_no_word_and_every_word_is_pretrained():
    assert len(ALL_PAIRS) == 100 and len(SEEN_PAIRS) == 70 and len(UNSEEN_PAIRS) == 30
    for index in range(10):  # every colour and shape is in 7 seen pairs
        assert sum(c == index for c, _ in SEEN_PAIRS) == 7 and sum(s == index for _, s in SEEN_PAIRS) == 7
    assert len(CLASS_NAMES) == len(set(CLASS_NAMES)) == 50 and CLASS_NAMES[0] == "red circle"
    base_words = {w for name in CLASS_NAMES[:25] for w in name.split()}
    new_words = {w for name in CLASS_NAMES[25:] for w in name.split()}
    assert len(base_words) == len(new_words) == 10 and base_words.isdisjoint(new_words)
    assert all(count_tokens(word) == 1 for word in base_words | new_words)
    assert sum(p in UNSEEN_PAIRS for p in BASE_CLASSES) == sum(p in UNSEEN_PAIRS for p in NEW_CLASSES) == 7
    assert caption_table(16).shape[-1] == shape_caption_table(16).shape[-1] == 16  # captions fit the toy CLIP
    named = torch.tensor([rgb for _, rgb in COLOURS])
    assert torch.cdist(torch.tensor(UNNAMED_COLOURS), named).min() > 0.28  # unnamed colours are not named ones


def test_pretraining_scenes_show_seen_pairs_or_unnamed_colours_only():
    sampler = SceneSampler(seed=0, context_length=16)
    pairs, images, tokens = sampler.sample(200)
    named = pairs[pairs[:, 0] < 10]
    assert 100 < len(named) < 200 and all(tuple(p) in SEEN_PAIRS for p in named.tolist())
    assert images.shape == (200, 3, 32, 32) and tokens.shape == (200, 16)
    again = SceneSampler(seed=0, context_length=16).sample(200)
    assert torch.equal(again[0], pairs) and torch.equal(again[1], images) and torch.equal(again[2], tokens)


def test_generator_is_deterministic_idempotent_and_matches_the_files(tmp_path, capsys):
    first = write_toyworld(tmp_path / "a", seed=0, counts=SMALL, quiet=True)
    same = write_toyworld(tmp_path / "b", seed=0, counts=SMALL, quiet=True)
    other = write_toyworld(tmp_path / "c", seed=1, counts=SMALL, quiet=True)
    files = files_of(first)
    assert len(files) == 50 * 5 + 2 and files == files_of(same)
    assert files[SPLIT_FILE] == files_of(other)[SPLIT_FILE] and files != files_of(other)

    split = json.loads(files[SPLIT_FILE])
    assert [len(split[s]) for s in ("train", "val", "test")] == [100, 50, 100]
    assert split["test"][0] == ["red_circle/0004.png", 0, "red circle"]
    images, labels = render_split("test", seed=0, per_class=2)
    on_disk = np.stack([np.asarray(Image.open(os.path.join(first, "images", rel))) for rel, _, _ in split["test"]])
    assert np.array_equal(on_disk, images.permute(0, 2, 3, 1).numpy())
    assert labels.tolist() == [label for _, label, _ in split["test"]]

    stamp = os.path.getmtime(os.path.join(first, SPLIT_FILE))
    write_toyworld(tmp_path / "a", seed=0, counts=SMALL)  # up to date: nothing rewritten
    assert "up to date" in capsys.readouterr().out and os.path.getmtime(os.path.join(first, SPLIT_FILE)) == stamp
    write_toyworld(tmp_path / "a", seed=1, counts=SMALL, quiet=True)  # another seed: replaced
    assert files_of(first) == files_of(other)


def test_generator_never_touches_a_foreign_folder_nor_leaves_a_partial_one(tmp_path, monkeypatch):
    (tmp_path / "mine" / "toyworld").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not written by tools.toyworld .* move it away"):
        write_toyworld(tmp_path / "mine", counts=SMALL, quiet=True)

    def interrupted(folder, *args):
        open(os.path.join(folder, "half.png"), "w").close()
        raise KeyboardInterrupt

    monkeypatch.setattr(toy_dataset, "_write_images", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_toyworld(tmp_path / "new", counts=SMALL, quiet=True)
    assert os.listdir(tmp_path / "new") == []


@pytest.mark.parametrize("variant", [TOYWORLD, TOYWORLD_WIDE], ids=lambda v: v.name)
def test_dassl_builds_toyworld_base_and_new(tmp_path, variant):
    pytest.importorskip("dassl")
    from dassl.config import get_cfg_default
    from dassl.data.datasets import build_dataset

    import datasets.toyworld  # registers ToyWorld and ToyWorldWide
    from datasets.specs import SPECS
    from trainers.config import extend_cfg

    spec = SPECS[variant.dassl_name]
    assert (spec.folder, spec.config, spec.image_dir, spec.split_file) == (
        variant.name, variant.name, toy_dataset.IMAGE_DIR, variant.split_file)
    write_toyworld(tmp_path, counts=SMALL, quiet=True, variant=variant)
    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.merge_from_file(os.path.join(ROOT, f"configs/datasets/{variant.name}.yaml"))
    cfg.DATASET.ROOT, cfg.DATASET.NUM_SHOTS, cfg.SEED = str(tmp_path), 2, 1
    half = len(variant.base)
    for subsample, names in (("base", variant.class_names[:half]), ("new", variant.class_names[half:])):
        cfg.DATASET.SUBSAMPLE_CLASSES = subsample
        data = build_dataset(cfg)
        assert type(data) is getattr(datasets.toyworld, variant.dassl_name) and data.classnames == list(names)
        assert (len(data.train_x), len(data.val), len(data.test)) == (2 * half, half, 2 * half)
    if variant is TOYWORLD_WIDE:  # every pair once; the halves split by colour; distractors stay in their half
        assert sorted(variant.classes) == sorted(ALL_PAIRS) and {c for c, _ in variant.base} == set(range(5))
        pairs = torch.tensor(variant.classes).repeat_interleave(50, dim=0)
        other = toy_dataset._distractors(pairs, torch.Generator().manual_seed(0), variant)
        assert ((other[:, 0] >= 5) == (pairs[:, 0] >= 5)).all() and (other != pairs).all(dim=1).all()
        assert set(other[:, 1].tolist()) == set(range(10))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A 5-step pretraining (batch 16) written through the real save path, and its report."""
    out = tmp_path_factory.mktemp("toyclip") / "toy.pt"
    report = pretrain(out, Recipe(steps=5, batch=16), progress=False, per_pair=1, test_per_class=1)
    return out, report


def test_short_pretraining_saves_openai_format_and_loads_as_custom(pretrained, tmp_path):
    from trainers.clip_loader import load_clip

    out, report = pretrained
    state = torch.load(out, map_location="cpu")
    assert state["positional_embedding"].shape == (16, 128) and state["visual.proj"].dtype == torch.float16
    model = load_clip("custom", str(out), prec="fp32")
    assert model.context_length == 16 and model.visual.input_resolution == 32
    assert sorted(os.listdir(out.parent)) == ["toy.pt", "toy.pt.json"]  # no temporary file left
    saved = json.loads((out.parent / "toy.pt.json").read_text())
    assert saved == json.loads(json.dumps(report)) and saved["steps"] == 5 and len(saved["unseen_pairs"]) == 30
    assert set(saved["accuracy"]["pairs_100way"]) == {"seen", "unseen", "all"}
    assert set(saved["accuracy"]["downstream_test"]) >= {"base", "new", "all_50way"}

    again = tmp_path / "again.pt"
    pretrain(again, Recipe(steps=5, batch=16), progress=False, per_pair=1, test_per_class=1)
    repeated = torch.load(again, map_location="cpu")
    assert all(torch.equal(v, repeated[k]) for k, v in state.items())  # same seed, same weights


def test_ensure_pretrained_trains_only_when_the_file_is_absent(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(pretrain_clip, "pretrain", lambda path, **kw: calls.append(path) or FAKE_REPORT)
    monkeypatch.setenv(pretrain_clip.CACHE_ENV, str(tmp_path / "cache.pt"))
    assert ensure_pretrained() == str(tmp_path / "cache.pt") and calls == [tmp_path / "cache.pt"]
    (tmp_path / "cache.pt").write_bytes(b"weights")
    assert ensure_pretrained() == str(tmp_path / "cache.pt") and len(calls) == 1


def test_the_shipped_toy_clip_is_checked_against_its_sha256(tmp_path, monkeypatch):
    monkeypatch.delenv(pretrain_clip.CACHE_ENV, raising=False)
    monkeypatch.setenv("DPC_CACHE", str(tmp_path / "digests"))
    assert ensure_pretrained() == str(pretrain_clip.SHIPPED)  # the file in the repository is intact
    report = json.loads((pretrain_clip.SHIPPED.parent / (pretrain_clip.SHIPPED.name + ".json")).read_text())
    assert report["accuracy"]["downstream_test"]["base"] > 50  # its zero-shot report travels with it
    damaged = tmp_path / "toy.pt"
    content = bytearray(pretrain_clip.SHIPPED.read_bytes())
    content[len(content) // 2] ^= 1  # one bit flipped inside a tensor
    damaged.write_bytes(bytes(content))
    with pytest.raises(UserError, match=r"toy\.pt is damaged or was replaced \(sha256 .*git checkout"):
        pretrain_clip.check_shipped(damaged)
    with pytest.raises(UserError, match="is missing: restore it"):
        pretrain_clip.check_shipped(tmp_path / "absent.pt")


FAKE_REPORT = {"steps": 1, "batch": 2, "seed": 0, "train_seconds": 1.0,
               "accuracy": {"pairs_100way": {"seen": 1.0, "unseen": 1.0},
                            "downstream_test": {"base": 1.0, "new": 1.0, "all_50way": 1.0}}}


def test_coop_runs_on_the_16_token_clip_and_names_a_prompt_that_does_not_fit(pretrained):
    from trainers.clip_loader import load_clip
    from trainers.models.coop import CoOpCLIP
    from trainers.models.zero_shot import zero_shot_text_features

    clip_model = load_clip("custom", str(pretrained[0]), prec="fp32")
    model = CoOpCLIP(CLASS_NAMES[:25], clip_model, n_ctx=4, ctx_init="a photo of a")
    assert model.prompt_learner.tokenized_prompts.shape == (25, 16)
    images, _ = render_split("test", per_class=1)
    logits = model(normalize(images[:3].float() / 255))
    assert logits.shape == (3, 25) and torch.isfinite(logits).all()
    assert zero_shot_text_features(clip_model, CLASS_NAMES).shape == (50, 64)  # PromptSRC's 60 templates fit
    with pytest.raises(ValueError, match=r"prompt 'X X X X X X X X X X X X X X X X red circle\.' needs 21 tokens"):
        CoOpCLIP(CLASS_NAMES[:25], clip_model, n_ctx=16)
    assert pair_name((9, 9)) == "white moon"


def test_interrupted_pretraining_leaves_no_file(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrain_clip, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pretrain(tmp_path / "toy.pt", Recipe(steps=1, batch=4), progress=False)
    assert os.listdir(tmp_path) == []


def test_a_missing_toyworld_names_the_command_that_writes_it(tmp_path):
    from datasets.pipeline import build_splits
    from datasets.readers import DatasetNotFoundError
    from datasets.specs import SPECS

    with pytest.raises(DatasetNotFoundError, match=r"(?s)toyworld.*python -m tools.toyworld --root DATA_ROOT"):
        build_splits(SPECS["ToyWorld"], str(tmp_path))
