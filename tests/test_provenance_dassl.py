"""Through train.py with real Dassl: a finished run is not reused once its CLIP weights, its dataset's files or the
code behaviour version changed; FORCE starts it over; runs from before versions are reused with a notice."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("dassl")

from tests.conftest import ROOT  # noqa: E402
from tools.synthetic_data import make_dataset  # noqa: E402
from tools.tiny_clip import save_tiny_clip  # noqa: E402
from trainers.provenance import VERSION_KEY  # noqa: E402


def test_weights_data_and_code_version_decide_reuse(tmp_path):
    data, weights, out = tmp_path / "data", tmp_path / "clip.pt", tmp_path / "run"
    make_dataset(str(data), "eurosat", n_classes=4, train_per_class=2)
    save_tiny_clip(str(weights))
    env = dict(os.environ, DPC_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "train.py", "--root", str(data), "--seed", "1", "--trainer", "CoOp",
           "--dataset-config-file", "configs/datasets/eurosat.yaml",
           "--config-file", "configs/trainers/CoOp/vit_b16_c4_ep20_batch32_lr35.yaml", "--output-dir", str(out)]
    opts = ["DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.MAX_EPOCH", "1",
            "MODEL.BACKBONE.NAME", "custom", "MODEL.BACKBONE.PATH", str(weights)]

    def train(*flags):
        return subprocess.run(cmd + list(flags) + opts, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)

    first = train()
    assert first.returncode == 0, first.stderr
    assert "note: fitted to the custom CLIP" in first.stdout  # INPUT.SIZE from the file: no override needed
    recorded = json.loads((out / "fingerprint.json").read_text())
    assert recorded["CLIP weights"].startswith("sha256:") and recorded["INPUT.SIZE"] == [32, 32]
    # recorded again once the dataset was built: the few-shot cache this first run wrote is part of it
    assert set(recorded["dataset files"]) == {"split_zhou_EuroSAT.json", "split_fewshot/shot_2-seed_1.pkl"}
    assert "(skipped)" in train().stdout

    save_tiny_clip(str(weights), seed=7)  # other weights at the same path
    refused = train()
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "holds a finished run with other settings: CLIP weights: 'sha256:" in refused.stderr
    assert "FORCE=1" in refused.stderr
    forced = train("--force")
    assert forced.returncode == 0 and "starting over" in forced.stdout, forced.stderr
    assert "(skipped)" in train().stdout

    split = data / "eurosat" / "split_zhou_EuroSAT.json"
    split.write_text(split.read_text().replace("Annual Crop Land", "Annual Crop"))  # the dataset was redone
    refused = train()
    assert refused.returncode == 2 and "dataset files: {" in refused.stderr
    assert "split_zhou_EuroSAT.json" in refused.stderr
    split.write_text(split.read_text().replace("Annual Crop", "Annual Crop Land"))
    assert "(skipped)" in train().stdout

    fingerprint = json.loads((out / "fingerprint.json").read_text())
    (out / "fingerprint.json").write_text(json.dumps(dict(fingerprint, **{VERSION_KEY: 0})))  # older code's run
    refused = train()
    assert refused.returncode == 2 and f"{VERSION_KEY}: 0 -> " in refused.stderr
    for key in (VERSION_KEY, "CLIP weights", "dataset files"):
        del fingerprint[key]
    (out / "fingerprint.json").write_text(json.dumps(fingerprint))  # made before versions were recorded
    reused = train()
    assert reused.returncode == 0 and reused.stdout.startswith("notice: reusing the finished run")
    assert "version unknown" in reused.stdout
