"""tools/prompt_stats.py and tools/prompt_maps.py: the channel statistics on cases with known answers, P and P' read
from real dual prompts, and Fig. 7 for a tiny CoOp -> DPC_CoOp run (the initial prompt rebuilt as train.py built it)."""
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from tests.conftest import ROOT
from tools.prompt_stats import (as_rows, baselines, channel_magnitudes, compare, downsample, nearest_words,
                                random_like, summarise)
from trainers.dpc import decoupling


def prompt(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def orthogonal_to(p, seed=1):
    """A random tensor of p's shape orthogonal to p (as flattened vectors)."""
    n = prompt(*p.shape, seed=seed)
    unit = p / p.norm()
    return n - (n * unit).sum() * unit


def test_a_prompt_against_itself_and_rescaled():
    p = prompt(4, 64)
    same = compare(p, p)
    assert same["channel_r"] == pytest.approx(1) and same["token_cos"] == pytest.approx(1)
    assert same["token_cos_min"] == pytest.approx(1) and same["top_shared"] == 1.0
    assert math.isnan(same["along_P"])  # no change to decompose
    scaled = compare(p, 3 * p)
    assert scaled["channel_r"] == pytest.approx(1) and scaled["token_cos"] == pytest.approx(1)
    assert scaled["along_P"] == pytest.approx(1)
    flipped = compare(p, -p)
    assert flipped["token_cos"] == pytest.approx(-1) and flipped["channel_r"] == pytest.approx(1)


def test_share_of_the_change_along_p():
    p = prompt(4, 64)
    noise = orthogonal_to(p)
    assert compare(p, p + noise)["along_P"] == pytest.approx(0, abs=1e-20)
    a, noise = 0.5, noise * (2.0 / noise.norm())  # |a P|^2 = 0.25 |P|^2, |noise|^2 = 4
    expected = a ** 2 * p.norm() ** 2 / (a ** 2 * p.norm() ** 2 + 4.0)
    assert compare(p, p + a * p + noise)["along_P"] == pytest.approx(float(expected))


def test_channel_magnitudes_correlation_and_strongest_channels():
    m = torch.linspace(0.1, 0.9, 20, dtype=torch.float64)[None]  # one token: magnitudes are |values|
    assert torch.allclose(channel_magnitudes(m), m[0])
    opposite = compare(m, 2 - m)  # magnitudes 2 - m: exactly anti-correlated, strongest channels swapped
    assert opposite["channel_r"] == pytest.approx(-1) and opposite["top_shared"] == 0.0
    rms = torch.tensor([[3.0, 0.0], [4.0, 0.0]])  # RMS over tokens: sqrt((9 + 16) / 2)
    assert channel_magnitudes(rms)[0] == pytest.approx(math.sqrt(12.5))


def test_rows_are_tokens_and_channels_the_last_dimension():
    assert as_rows(torch.zeros(3, 4, 8)).shape == (12, 8)  # class-specific context: class x token rows
    assert as_rows(torch.zeros(8)).shape == (1, 8)
    assert as_rows(torch.zeros(32, 16, 1, 1)).shape == (32, 16)  # a 1x1 convolution: its input channels


def test_random_baselines_have_the_norms_they_claim_and_near_chance_statistics():
    p = prompt(4, 64)
    p_dual = p + 0.1 * orthogonal_to(p)
    r = random_like(p, 7.0, torch.Generator().manual_seed(0))
    assert r.shape == p.shape and float(r.norm()) == pytest.approx(7.0)
    base = baselines(p, p_dual, draws=200)
    assert base == baselines(p, p_dual, draws=200)  # seeded
    channel_r, _ = base["random prompt"]["channel_r"]
    assert abs(channel_r) < 0.06 and abs(base["random prompt"]["token_cos"][0]) < 0.05
    along, _ = base["random move"]["along_P"]  # a random direction in n dimensions: 1/n along P on average
    assert 0.3 / p.numel() < along < 3.0 / p.numel()
    assert base["random move"]["token_cos"][0] > 0.99  # a small move keeps the tokens' directions


def test_summaries_are_mean_and_population_std_without_nans():
    rows = [{"a": 1.0, "b": math.nan}, {"a": 3.0, "b": math.nan}]
    summary = summarise(rows)
    assert summary["a"] == (2.0, 1.0) and all(math.isnan(v) for v in summary["b"])


def test_downsampling_takes_block_means():
    x = torch.arange(32, dtype=torch.float64).reshape(4, 8)
    expected = x.reshape(2, 2, 4, 2).mean(dim=(1, 3))
    assert torch.equal(downsample(x, max_rows=2, max_columns=4), expected)
    assert torch.equal(downsample(x), x)  # small maps stay as they are


def test_nearest_words_read_the_real_token_embedding(tiny_clip_file):
    from clip.simple_tokenizer import SimpleTokenizer

    from trainers.clip_loader import read_state_dict

    tokenizer = SimpleTokenizer()
    embedding = read_state_dict(tiny_clip_file)["token_embedding.weight"].float()
    ids = [tokenizer.encoder["photo</w>"], tokenizer.encoder["dog</w>"], tokenizer.encoder["pho"]]
    vectors = embedding[ids] + 1e-4 * prompt(3, embedding.shape[1]).float()
    words = nearest_words(vectors, embedding, tokenizer, k=2)
    assert [row[0][0] for row in words] == ["photo", "dog", "pho-"]  # a word piece is marked
    assert all(row[0][1] < 0.01 < row[1][1] for row in words)


@pytest.mark.parametrize("update", decoupling.UPDATES)
def test_p_and_p_dual_are_read_from_a_stage2_state_dict_by_its_update_rule(update):
    from tools.prompt_maps import dual_prompts

    p, change = prompt(4, 16).float(), prompt(4, 16, seed=3).float()
    holder = nn.Module()
    holder.ctx = nn.Parameter(p.clone())
    holder.deep = nn.ParameterList([nn.Parameter(p.clone() * 2)])
    decoupling.attach(holder, ["ctx", "deep.0"], w_train=0.2, update=update)
    holder.ctx = p + change  # sets the trained tensor M so that P' = P + change (right_inverse)
    read = dual_prompts(holder.state_dict())
    assert set(read) == {"ctx", "deep.0"}
    assert torch.equal(read["ctx"][0], p) and torch.allclose(read["ctx"][1], p + change, atol=1e-6)
    assert torch.equal(read["deep.0"][0], 2 * p) and torch.equal(read["deep.0"][1], 2 * p)  # untrained: P' = P


# ---------------------------------------------------------------- a real CoOp -> DPC_CoOp run
COOP_CONFIG = "configs/trainers/CoOp/vit_b16_c4_ep20_batch32_lr35.yaml"
DPC_CONFIG = "configs/trainers/DPC/CoOp/vit_b16_c4_ep20_batch4_lr35_top8.yaml"


@pytest.fixture(scope="module")
def dpc_run(tmp_path_factory):
    """Stage 1 by train.py with a random context and learning rate 0 (its checkpoint then holds the prompt it
    was built with), then one epoch of DPC stage 2 in this process."""
    pytest.importorskip("dassl")
    from tests._backbone_e2e import build_trainer, make_workspace

    root = tmp_path_factory.mktemp("prompt_maps")
    workspace = make_workspace(root)
    stage1, stage2 = root / "stage1", root / "stage2"
    cmd = [sys.executable, "train.py", "--root", workspace["data"], "--seed", "1", "--trainer", "CoOp",
           "--dataset-config-file", "configs/datasets/eurosat.yaml", "--config-file", COOP_CONFIG,
           "--output-dir", str(stage1), "DATASET.SUBSAMPLE_CLASSES", "base", *workspace["opts"],
           "TRAINER.COOP.CTX_INIT", "", "OPTIM.LR", "0.0", "OPTIM.WARMUP_CONS_LR", "0.0"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trainer = build_trainer(workspace, "DPC_CoOp", DPC_CONFIG, stage2, "DATASET.SUBSAMPLE_CLASSES", "base",
                            "DPC.STAGE1_DIR", str(stage1), "DPC.TOPK", "2")
    trainer.train()
    return {"stage1": stage1, "stage2": stage2}


def test_initial_prompt_is_rebuilt_as_train_py_built_it(dpc_run):
    from tools.prompt_maps import analyse
    from trainers.dpc.checkpoint import load_checkpoint

    maps = analyse(str(dpc_run["stage2"]), draws=5)
    assert [t.name for t in maps.tensors] == ["prompt_learner.ctx"] and maps.ctx_init == ""
    t = maps.tensors[0]
    built = load_checkpoint(str(dpc_run["stage1"] / "prompt_learner" / "model.pth.tar-1"))["state_dict"]["ctx"]
    assert torch.equal(t.initial, built.float())  # learning rate 0: stage 1 saved the prompt it was built with
    assert torch.equal(t.stage1, built.float())
    assert t.initial.std().item() == pytest.approx(0.02, rel=0.3)  # CoOp's N(0, 0.02)
    saved = load_checkpoint(str(dpc_run["stage2"] / "prompt_learner" / "model.pth.tar-1"))["state_dict"]
    assert torch.equal(t.parallel, saved["parametrizations.ctx.original"].float())  # release rule: P' = M
    assert not torch.equal(t.parallel, t.stage1)  # stage 2 trained it
    assert t.stats["P' (DPC)"] == compare(t.stage1, t.parallel)
    assert t.stats["initial prompt"]["channel_r"] == pytest.approx(1)
    assert set(t.words) == {"initial", "P", "P'"} and len(t.words["P"]) == t.stage1.shape[0]


def test_tool_writes_fig7_and_prints_the_statistics(dpc_run, tmp_path, capsys):
    import matplotlib.image

    from tools.prompt_maps import main

    png = tmp_path / "fig7.png"
    main([str(dpc_run["stage2"]), "--out", str(png), "--draws", "5"])
    printed = capsys.readouterr().out
    image = matplotlib.image.imread(str(png))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 500
    assert "prompt_learner.ctx [4, 64]" in printed and "random move" in printed and "nearest words" in printed
    assert f"figure: {png}" in printed


def test_a_stage1_run_is_refused_with_the_fix(dpc_run):
    from tools.prompt_maps import main
    from trainers.dpc.errors import ConfigError

    with pytest.raises(ConfigError, match="not a DPC stage-2 checkpoint"):
        main([str(dpc_run["stage1"])])
    assert not os.path.exists(dpc_run["stage1"] / "prompt_maps.png")
