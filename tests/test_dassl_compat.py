"""Our patches of the pinned Dassl: the warm-up scheduler resumes onto the live optimizer; its checkpoint loader
runs no code from the file."""
import pytest
import torch

pytest.importorskip("dassl")

from dassl.optim import build_lr_scheduler  # noqa: E402
from yacs.config import CfgNode as CN  # noqa: E402

from tests._faults import Payload  # noqa: E402
from trainers.dpc import dassl_compat  # noqa: E402
from trainers.dpc.errors import UnsafeFileError  # noqa: E402

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


def test_dassls_loader_is_patched_under_every_name_it_is_imported_by(tmp_path):
    """Upstream trainers do ``from dassl.utils import load_checkpoint``; Dassl's trainer does too."""
    import types

    import dassl.engine.trainer
    import dassl.utils
    from dassl.utils import torchtools

    patched = torchtools.load_checkpoint
    assert dassl.utils.load_checkpoint is patched and dassl.engine.trainer.load_checkpoint is patched
    early = types.ModuleType("early_upstream_trainer")  # imported before the patch: holds another function
    original = lambda path: None  # noqa: E731
    early.load_checkpoint = early.alias = original
    import sys
    sys.modules[early.__name__] = early
    try:
        dassl_compat.replace_everywhere(original, patched)
        assert early.load_checkpoint is patched and early.alias is patched
    finally:
        del sys.modules[early.__name__]
    # a checkpoint as the unpatched Dassl wrote it (the warm-up scheduler's successor pickled whole, optimizer
    # included) still loads, and resumes the schedule; one carrying a payload is refused before any of it runs
    optim, sched = schedule(torch.nn.Parameter(torch.zeros(1)))
    for _ in range(2):
        sched.step()
    path = tmp_path / "model.pth.tar-1"
    torch.save({"state_dict": {}, "epoch": 2, "scheduler": {k: v for k, v in vars(sched).items() if k != "optimizer"}},
               path)
    resumed_optim, resumed = schedule(torch.nn.Parameter(torch.zeros(1)))
    resumed.load_state_dict(dassl.engine.trainer.load_checkpoint(str(path))["scheduler"])
    resumed_optim.load_state_dict(optim.state_dict())
    sched.step()
    resumed.step()
    assert resumed_optim.param_groups[0]["lr"] == optim.param_groups[0]["lr"]
    marker = tmp_path / "payload-ran"
    torch.save({"state_dict": {}, "epoch": 1, "note": Payload(marker)}, path)
    with pytest.raises(UnsafeFileError, match="holds pickled Python objects"):
        dassl.engine.trainer.load_checkpoint(str(path))
    assert not marker.exists()
