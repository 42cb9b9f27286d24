"""fp16 and amp paths, simulated on the CPU with bench/cuda_paths.py's checks (the real run needs CUDA):
fp16 weights run with the CPU's fp16 kernels, amp autocasts to float16 with torch.amp's CPU grad scaler."""
import importlib.util
import math
import os

import pytest
import torch

pytest.importorskip("dassl")

from tests.conftest import ROOT  # noqa: E402


def cuda_paths():
    spec = importlib.util.spec_from_file_location("cuda_paths", os.path.join(ROOT, "bench", "cuda_paths.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    module = cuda_paths()
    work = str(tmp_path_factory.mktemp("precision"))
    return module, dict(module.make_workspace(work), work=work)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message is for machines without CUDA")
def test_script_refuses_to_run_without_cuda_and_says_what_to_do(capsys):
    assert cuda_paths().main(["--backbones", "CoOp"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "--simulate-on-cpu" in err


def test_amp_trains_evaluates_round_trips_and_resumes_with_its_scaler(bench):
    """CoOp, then DPC_CoOp from it, under amp: a resumed run equals the uninterrupted one, grad scaler included
    (its whole state is compared; the scale moves every step, so a state lost in the checkpoint would show)."""
    module, ws = bench
    with module.precision_on_cpu():
        rows = module.check_all(ws, ["CoOp"], ["amp"], resume_tol=0.0, report=None)
    assert len(rows) == 8 and all(r["ok"] for r in rows), [r for r in rows if not r["ok"]]
    scales = [float(r["detail"].split("scaler ")[1]) for r in rows if r["check"] == "resume"]
    # fp16 autocast as on CUDA: the scale starts at 65536, doubles after a finite step and halves after an overflow
    assert all(2 ** 14 <= s <= 2 ** 18 and math.log2(s).is_integer() for s in scales), scales


def test_fp16_weights_train_and_load_into_fp32(bench):
    """fp16 CLIP and prompts: trained, evaluated, and the checkpoint read by an fp16 and an fp32 trainer."""
    module, ws = bench
    with module.precision_on_cpu():
        results, out = module.check_stage(ws, "CoOp", "fp16", 1, resume_tol=0.0)
    assert all(ok for ok, _ in results.values()), results
    assert "CLIP float16" in results["train"][1]
    ckpt = torch.load(os.path.join(out, "prompt_learner", "model.pth.tar-2"), map_location="cpu", weights_only=False)
    assert ckpt["state_dict"]["ctx"].dtype == torch.float16 and ckpt["resume"]["scaler"] is None


def test_trainer_uses_torch_amp_scaler_for_its_device(bench):
    module, ws = bench
    with module.precision_on_cpu():
        trainer = module.build(ws, "CoOp", module.BACKBONES["CoOp"][0], os.path.join(ws["work"], "scaler"),
                               "TRAINER.COOP.PREC", "amp")
    assert type(trainer.scaler) is torch.amp.GradScaler and trainer.scaler._device == "cpu"
