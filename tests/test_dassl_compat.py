"""Our patches of the pinned Dassl: the warm-up scheduler resumes onto the live optimizer."""
import pytest
import torch

pytest.importorskip("dassl")

from dassl.optim import build_lr_scheduler  # noqa: E402
from yacs.config import CfgNode as CN  # noqa: E402

from trainers.dpc import dassl_compat  # noqa: E402

dassl_compat.apply()


def schedule(param):
    optim = torch.optim.SGD([param], lr=0.1)
    cfg = CN({"LR_SCHEDULER": "cosine", "MAX_EPOCH": 6, "WARMUP_EPOCH": 1, "WARMUP_TYPE": "constant",
              "WARMUP_CONS_LR": 1e-5, "WARMUP_RECOUNT": True, "STEPSIZE": [-1], "GAMMA": 0.1})
    return optim, build_lr_scheduler(optim, cfg)


def test_a_resumed_warmup_scheduler_drives_the_live_optimizer():
    whole_optim, whole = schedule(torch.nn.Parameter(torch.zeros(1)))
    lrs = []
    for _ in range(5):
        whole.step()
        lrs.append(whole_optim.param_groups[0]["lr"])
    assert len(set(lrs)) == 5  # warm-up, then the cosine decay

    first_optim, first = schedule(torch.nn.Parameter(torch.zeros(1)))
    for _ in range(2):
        first.step()
    state = first.state_dict()
    assert isinstance(state["successor"], dict) and "optimizer" not in state  # no stale optimizer copy
    resumed_optim, resumed = schedule(torch.nn.Parameter(torch.zeros(1)))
    resumed_optim.load_state_dict(first_optim.state_dict())
    resumed.load_state_dict(state)
    after = []
    for _ in range(3):
        resumed.step()
        after.append(resumed_optim.param_groups[0]["lr"])
    assert after == lrs[2:]
