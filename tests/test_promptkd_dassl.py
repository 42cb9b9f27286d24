"""PromptKD and PromptKD+DPC end to end with real Dassl: the one command (teacher, PromptKD, DPC, both new-class
tests) on a tiny synthetic EuroSAT with a "large" teacher CLIP and a "small" student CLIP, then the invariants
in this process."""
import copy
import itertools
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("dassl")

from tests._backbone_e2e import build_trainer  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tools.run_results import read_accuracy  # noqa: E402
from tools.synthetic_data import make_dataset  # noqa: E402
from tools.tiny_clip import save_tiny_clip  # noqa: E402
from trainers.dpc import decoupling  # noqa: E402
from trainers.dpc.checkpoint import atomic_save, load_checkpoint  # noqa: E402

SHOTS, LARGE_WIDTH = 2, 128
DEPTH = ["TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "3", "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "3",
         "TRAINER.PROMPTKD.PROMPT_DEPTH_VISION", "3"]
STAGE1 = "PromptKD/vit_b16_c2_ep20_batch32_4+4ctx"
STAGE2 = "DPC/PromptKD/vit_b16_c2_ep20_batch4_4+4ctx_top8"
TEACHER = "PromptSRC/vit_l14_c2_ep20_batch8_4+4ctx"


@pytest.fixture(scope="module")
def kd(tmp_path_factory):
    """The one command, run once: bash scripts/dpc/base2new_train.sh eurosat 1 promptkd (tiny settings)."""
    root = tmp_path_factory.mktemp("promptkd")
    make_dataset(str(root / "data"), "eurosat", n_classes=6, train_per_class=3, val_per_class=1, test_per_class=2)
    small = save_tiny_clip(str(root / "small.pt"))
    large = save_tiny_clip(str(root / "large.pt"), width=LARGE_WIDTH, embed_dim=48, seed=1)
    opts = ["MODEL.BACKBONE.NAME", "custom", "MODEL.BACKBONE.PATH", small, "INPUT.SIZE", "(32,32)",
            "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TEST.BATCH_SIZE", "16", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
            "OPTIM.MAX_EPOCH", "1", "TRAIN.PRINT_FREQ", "1", "DPC.TOPK", "3", "TRAINER.PROMPTKD.TEACHER_NAME", "custom",
            "TRAINER.PROMPTKD.TEACHER_PATH", large] + DEPTH
    env = dict(os.environ, DATA_ROOT=str(root / "data"), OUTPUT_ROOT=str(root / "out"), SHOTS=str(SHOTS),
               PYTHON=sys.executable)
    proc = subprocess.run(["bash", "scripts/dpc/base2new_train.sh", "eurosat", "1", "promptkd", *opts], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = root / "out" / "base2new"

    def run_dir(kind, trainer, config):
        return runs / kind / "eurosat" / f"shots_{SHOTS}" / trainer / config.split("/")[-1] / "seed1"

    dirs = {"teacher": run_dir("train_base", "PromptSRC", TEACHER),
            "promptkd": run_dir("train_base", "PromptKD", STAGE1), "dpc": run_dir("train_base", "DPC_PromptKD", STAGE2),
            "promptkd_new": run_dir("test_new", "PromptKD", STAGE1), "dpc_new": run_dir("test_new", "DPC_PromptKD", STAGE2)}
    # what the scripts pass to the runs after the teacher's: the shots and the teacher
    run_opts = opts + ["DATASET.NUM_SHOTS", str(SHOTS), "TRAINER.PROMPTKD.TEACHER_DIR", str(dirs["teacher"]),
                       "TRAINER.PROMPTKD.TEACHER_EPOCH", "1"]
    return {"root": root, "data": str(root / "data"), "opts": run_opts, "dirs": dirs, "stdout": proc.stdout}


def build(kd, trainer, config, out, *opts):
    """The trainer train.py builds for this command line, in this process."""
    return build_trainer(kd, trainer, f"configs/trainers/{config}.yaml", out, *opts)


def test_one_command_trains_teacher_student_dpc_and_tests_both(kd):
    d = kd["dirs"]
    for name, path in d.items():
        assert (path / "done.json").is_file(), name
    assert "[PromptKD] teacher: PromptSRC" in kd["stdout"]
    teacher = load_checkpoint(str(d["teacher"] / "prompt_learner" / "model.pth.tar-1"))
    assert teacher["trainer"] == "PromptSRC" and len(teacher["classnames"]) == 3  # on the base classes
    table = subprocess.run([sys.executable, "tools/parse_test_res.py", "--base2new", str(kd["root"] / "out" / "base2new")],
                           cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert "| PromptKD " in table and "| DPC_PromptKD " in table and "DPC_PromptKD - PromptKD" in table
    # w_n = 1e-6: DPC's new-class predictions are PromptKD's
    assert read_accuracy(str(d["dpc_new"])) == read_accuracy(str(d["promptkd_new"]))
    log = (d["promptkd"] / "log.txt").read_text()
    assert "distilling on all 18 training images of all 6 classes" in log  # transductive: every class, every image


def test_checkpoints_hold_the_student_and_dpc_clones_stage1(kd):
    d = kd["dirs"]
    kd_ckpt = load_checkpoint(str(d["promptkd"] / "prompt_learner" / "model.pth.tar-1"))
    state = kd_ckpt["state_dict"]
    assert {k.split(".")[0] for k in state} == {"vision_ctx", "deep_vision", "projector"}
    assert "projector.layers.1.running_mean" in state and kd_ckpt["teacher"]["prompts_sha256"]
    dpc = load_checkpoint(str(d["dpc"] / "prompt_learner" / "model.pth.tar-1"))["state_dict"]
    teacher = load_checkpoint(str(d["teacher"] / "prompt_learner" / "model.pth.tar-1"))["state_dict"]
    for key, value in state.items():  # P of every student tensor is the PromptKD tensor, truly cloned
        owner, _, attr = key.rpartition(".")
        p_key = f"{owner}.parametrizations.{attr}.0.stage1" if owner else f"parametrizations.{attr}.0.stage1"
        if p_key in dpc:
            assert torch.equal(dpc[p_key], value), key
        elif "running" in key:
            assert torch.equal(dpc[f"{owner}.dpc_stage1_statistics.{attr}"], value), key
    for key in ["ctx", "deep_text.0", "deep_text.1"]:  # the text copy starts at the teacher's prompts
        owner, _, attr = f"dpc_text.{key}".rpartition(".")
        assert torch.equal(dpc[f"{owner}.parametrizations.{attr}.0.stage1"], teacher[key].float()), key
    n_duals = sum(k.endswith(".0.stage1") for k in dpc)
    assert n_duals == 9 + 3  # vision prompts (3), projector (6), text copy (3)


def test_stage1_mode_and_w_new_zero_reproduce_promptkd(kd, tmp_path):
    d = kd["dirs"]
    images = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    logits = {}
    for split in ("base", "new"):
        promptkd = build(kd, "PromptKD", STAGE1, tmp_path / f"kd_{split}", "DATASET.SUBSAMPLE_CLASSES", split)
        promptkd.load_model(str(d["promptkd"]), epoch=1)
        promptkd.set_model_mode("eval")
        with torch.no_grad():
            logits[split] = promptkd.model_inference(images)
    mode_of = {"base": ["DPC.EVAL_MODE", "stage1"], "new": ["DPC.W_NEW", "0.0"]}
    for split, opts in mode_of.items():
        dpc = build(kd, "DPC_PromptKD", STAGE2, tmp_path / f"dpc_{split}", "DATASET.SUBSAMPLE_CLASSES", split, *opts)
        dpc.load_model(str(d["dpc"]), epoch=1)
        dpc.set_model_mode("eval")
        with torch.no_grad():
            assert torch.equal(dpc.model_inference(images), logits[split]), split
            if split == "base":  # the trained parallel prompts do change base predictions
                decoupling.set_mode(dpc.dpc_net, "base")
                assert not torch.equal(dpc.model_inference(images), logits[split])


def upstream_layout(ckpt_state, teacher_trainer):
    """Our teacher run's prompts under the PromptKD authors' key names, with their class-name token buffer."""
    state = {"prompt_learner.ctx": ckpt_state["ctx"], "image_encoder.VPT": ckpt_state["vision_ctx"],
             "prompt_learner.token_suffix": teacher_trainer.teacher.prompt_learner.token_suffix[:3].half()}
    for key, value in ckpt_state.items():
        if key.startswith("deep_"):
            tower = "text_encoder" if key.startswith("deep_text") else "image_encoder"
            state[f"{tower}.transformer.resblocks.{int(key.split('.')[1]) + 1}.VPT_shallow"] = value
    return state


def test_published_teacher_layout_gives_the_same_teacher(kd, tmp_path):
    d = kd["dirs"]
    ours = build(kd, "PromptKD", STAGE1, tmp_path / "ours", "DATASET.SUBSAMPLE_CLASSES", "new")
    teacher = load_checkpoint(str(d["teacher"] / "prompt_learner" / "model.pth.tar-1"))["state_dict"]
    published = tmp_path / "teacher_model" / "eurosat"
    atomic_save({"state_dict": upstream_layout(teacher, ours), "epoch": 20},
                str(published / "VLPromptLearner" / "model-best.pth.tar"))
    theirs = build(kd, "PromptKD", STAGE1, tmp_path / "theirs", "DATASET.SUBSAMPLE_CLASSES", "new",
                   "TRAINER.PROMPTKD.TEACHER_DIR", str(published), "TRAINER.PROMPTKD.TEACHER_EPOCH", "-1")
    assert torch.equal(theirs.teacher_text, ours.teacher_text)
    theirs.load_model(str(d["promptkd"]), epoch=1)  # same prompts: the student is evaluated with this copy
    other = dict(upstream_layout(teacher, ours), **{"prompt_learner.ctx": teacher["ctx"] + 1})
    atomic_save({"state_dict": other, "epoch": 20}, str(tmp_path / "other" / "VLPromptLearner" / "model-best.pth.tar"))
    wrong = build(kd, "PromptKD", STAGE1, tmp_path / "wrong", "DATASET.SUBSAMPLE_CLASSES", "new",
                  "TRAINER.PROMPTKD.TEACHER_DIR", str(tmp_path / "other"), "TRAINER.PROMPTKD.TEACHER_EPOCH", "-1")
    with pytest.raises(ValueError, match="was distilled from the teacher"):
        wrong.load_model(str(d["promptkd"]), epoch=1)


def test_teacher_held_once_text_features_computed_once_and_parallel_kd(kd, tmp_path):
    import clip.model

    d = kd["dirs"]
    dpc = build(kd, "DPC_PromptKD", STAGE2, tmp_path / "dpc", "DATASET.SUBSAMPLE_CLASSES", "base",
                "DPC.STAGE1_DIR", str(d["promptkd"]), "DPC.PARALLEL_LOSS", "True")
    modules = {id(m): m for root in (dpc.model, dpc.teacher) for m in root.modules()}.values()
    large_blocks = [m for m in modules if isinstance(m, clip.model.ResidualAttentionBlock)
                    and m.ln_1.weight.shape[0] == LARGE_WIDTH]
    assert len(large_blocks) == 8  # one teacher: 4 text and 4 vision blocks, none copied for DPC's text side
    calls = []
    dpc.teacher.text_encoder.register_forward_hook(lambda *a: calls.append("teacher text"))
    dpc.teacher.image_encoder.register_forward_hook(lambda *a: calls.append("teacher image"))
    dpc.before_train()
    dpc.set_model_mode("train")
    dpc.batch_idx, dpc.num_batches = 0, 2
    batch = next(iter(dpc.train_loader_x))
    out = dpc.forward_backward(batch)
    assert calls.count("teacher image") == 1  # anchors scored once; the same features serve the KD term
    assert calls.count("teacher text") == 1  # the text copy under P' (the teacher's own features are stored)
    assert out["kd"] > 0 and abs(out["loss"] - out["loss_cl"] - out["kd"]) < 1e-4 * max(1.0, out["loss"])
    promptkd = build(kd, "PromptKD", STAGE1, tmp_path / "kd", "DATASET.SUBSAMPLE_CLASSES", "base")
    calls.clear()
    promptkd.teacher.text_encoder.register_forward_hook(lambda *a: calls.append("teacher text"))
    promptkd.set_model_mode("train")
    promptkd.batch_idx, promptkd.num_batches = 0, 2
    out = promptkd.forward_backward(next(iter(promptkd.train_loader_x)))
    assert calls == [] and out["loss"] > 0  # PromptKD's step uses the stored text features of all classes


def test_a_student_is_recognised_whatever_precision_loaded_its_teacher():
    """A student distilled from a teacher loaded in fp16 (GPU) evaluates on a CPU, where the teacher loads in fp32."""
    from types import SimpleNamespace

    from trainers.promptkd import same_teacher, teacher_record

    learner = torch.nn.Module()
    learner.ctx = torch.nn.Parameter(torch.randn(4, 8, generator=torch.Generator().manual_seed(0)))  # not fp16-exact
    fp32 = SimpleNamespace(prompt_learner=learner)
    fp16 = SimpleNamespace(prompt_learner=copy.deepcopy(learner).half())
    on_gpu, on_cpu = teacher_record(fp16, "t.pt"), teacher_record(fp32, "t.pt")
    assert on_gpu["prompts_sha256"] != on_cpu["prompts_sha256"] and same_teacher(on_gpu, on_cpu)
    older = {"prompts_sha256": on_cpu["prompts_sha256"]}  # a record written before the fp16 digest existed
    assert same_teacher(older, on_cpu) and not same_teacher(older, on_gpu)
    other = copy.deepcopy(learner)
    with torch.no_grad():
        other.ctx.add_(0.1)
    assert not same_teacher(on_gpu, teacher_record(SimpleNamespace(prompt_learner=other), "t.pt"))


# ------------------------------------------------------------------ the release's DPC step, restated
class ReleasePromptKDStep:
    """One DPC step of the PromptKD release (github JREion/DPC, trainers/sple_promptkd.py), restated for these
    tests, with its two documented defects neutralised (its deep prompts start at their tuned values and its
    teacher holds its trained context):

    - trained: the student's vision prompt, deep vision prompts and projector (from stage-1 PromptKD), and a
      copy of the teacher's text context and deep text prompts, all in one SGD optimizer;
    - the text context alone goes through the decoupling (ctx - (1 - w) P) * (1 / w), where the "frozen" P is
      the parameter's own storage; every other tensor is a plain parameter;
    - loss: the student's projected features of the pairs against the copy's text features of the pairs'
      classes (teacher's text tower), symmetric cross-entropy with targets arange(L); nothing else.
    """

    def __init__(self, promptkd, w_b, optim_cfg):
        self.student = copy.deepcopy(promptkd.model)
        self.teacher = promptkd.teacher
        learner = self.teacher.prompt_learner
        self.ctx = torch.nn.Parameter(learner.ctx.detach().clone().float())
        self.pretuned_ctx = self.ctx.data  # shares storage with the trained tensor, as in the release
        self.deep_text = [torch.nn.Parameter(p.detach().clone().float()) for p in learner.deep_text]
        self.w = w_b
        params = [p for p in self.student.parameters() if p.requires_grad] + [self.ctx] + self.deep_text
        self.optim = torch.optim.SGD(params, lr=optim_cfg.LR, momentum=optim_cfg.MOMENTUM,
                                     weight_decay=optim_cfg.WEIGHT_DECAY)

    def step(self, images, labels):
        self.student.train()
        ctx = (self.ctx - (1 - self.w) * self.pretuned_ctx) * (1 / self.w)
        learner = self.teacher.prompt_learner
        text = self.teacher.text_encoder(learner.text_prompts(ctx=ctx), learner.tokenized_prompts, self.deep_text)
        text = F.normalize(text.float()[labels], dim=-1)
        image = F.normalize(self.student.encode_image(images), dim=-1)
        logits = self.student.logit_scale.exp() * image @ text.t()
        targets = torch.arange(len(labels))
        loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2
        self.optim.zero_grad()
        loss.backward()
        self.optim.step()

    def tensors(self):
        """The trained tensors under DPC_PromptKD's dual names, and the projector's running statistics."""
        state = dict(self.student.prompt_learner.state_dict(), **{"dpc_text.ctx": self.ctx.detach()})
        state.update({f"dpc_text.deep_text.{i}": p.detach() for i, p in enumerate(self.deep_text)})
        return state


def our_tensors(dpc):
    """DPC_PromptKD's parallel prompts P' by dual name, and the projector's running statistics."""
    learner = dpc.model.prompt_learner
    with decoupling.mode(dpc.dpc_net, "train"):
        state = {name: _read(learner, name) for name in dpc.dpc_prompts["prompt_learner"]}
    norm = learner.projector.layers[1]
    state.update({"projector.layers.1.running_mean": norm.running_mean.clone(),
                  "projector.layers.1.running_var": norm.running_var.clone()})
    return state


def _read(module, dotted):
    *path, attr = dotted.split(".")
    for part in path:
        module = getattr(module, part)
    return getattr(module, attr).detach().clone()  # P' in train mode


def replay(kd, out, promptkd, steps, *opts):
    """(DPC_PromptKD after ``steps`` steps, the release restated after the same steps on the same pairs)."""
    from dassl.utils import set_random_seed

    set_random_seed(1)
    dpc = build(kd, "DPC_PromptKD", STAGE2, out, "DATASET.SUBSAMPLE_CLASSES", "base", "DPC.STAGE1_DIR",
                str(kd["dirs"]["promptkd"]), "OPTIM.LR", "0.05", "OPTIM.WARMUP_EPOCH", "0", *opts)
    release = ReleasePromptKDStep(promptkd, dpc.cfg.DPC.W_BASE, dpc.cfg.OPTIM)
    pairs = []
    sample = dpc.dpc_batch

    def recorded(images, labels):
        negatives, pair_labels, anchors = sample(images, labels)
        pairs.append((torch.cat([images, negatives]), pair_labels))
        return negatives, pair_labels, anchors

    dpc.dpc_batch = recorded
    dpc.before_train()
    dpc.set_model_mode("train")
    dpc.batch_idx, dpc.num_batches = 0, steps + 1  # no epoch end in between
    batches = iter(itertools.cycle(dpc.train_loader_x))
    for _ in range(steps):
        dpc.forward_backward(next(batches))
        release.step(*pairs[-1])
    return dpc, release


def test_stage2_is_the_releases_step_and_new_classes_its_evaluation(kd, tmp_path):
    """At w_b = 0.2, after 4 SGD steps with momentum and weight decay on the same pairs: every trained tensor
    and the projector's statistics are the release's; evaluated on new classes (saved, reloaded) with w_n in
    {0, 1e-6, 0.5}: the release's logits (stage-1 projector and statistics, vision prompts mixed with w_n)."""
    promptkd = build(kd, "PromptKD", STAGE1, tmp_path / "kd", "DATASET.SUBSAMPLE_CLASSES", "base")
    promptkd.load_model(str(kd["dirs"]["promptkd"]), epoch=1)
    dpc, release = replay(kd, tmp_path / "dpc", promptkd, 4)
    assert dpc.cfg.OPTIM.MOMENTUM == 0.9 and dpc.cfg.OPTIM.WEIGHT_DECAY == 5e-4 and dpc.cfg.DPC.W_BASE == 0.2
    assert dpc.dpc_weighted == {"prompt_learner": ["dpc_text.ctx"]} and dpc.dpc_neg_transform() == "test"
    ours, theirs = our_tensors(dpc), release.tensors()
    stage1 = {k: v for k, v in promptkd.model.prompt_learner.state_dict().items()}
    moved = max((ours[k] - stage1[k]).abs().max().item() for k in ours if k in stage1 and "running" not in k)
    assert moved > 1e-3  # the student trained
    for key, value in ours.items():
        torch.testing.assert_close(value, theirs[key], rtol=0, atol=1e-4 * moved, msg=key)
    every = our_tensors(replay(kd, tmp_path / "every", promptkd, 4, "DPC.W_BASE_TENSORS", "all")[0])  # all x5
    assert max((every[k] - theirs[k]).abs().max().item() for k in ours) > 100 * 1e-4 * moved

    dpc.save_model(0, str(tmp_path / "dpc"))
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    new_kd = build(kd, "PromptKD", STAGE1, tmp_path / "kd_new", "DATASET.SUBSAMPLE_CLASSES", "new")
    new_kd.load_model(str(kd["dirs"]["promptkd"]), epoch=1)
    evaluators = {}
    for rule in ("auto", "all"):
        evaluators[rule] = build(kd, "DPC_PromptKD", STAGE2, tmp_path / f"new_{rule}", "DATASET.SUBSAMPLE_CLASSES",
                                 "new", "DPC.W_NEW_TENSORS", rule)
        evaluators[rule].load_model(str(tmp_path / "dpc"), epoch=1)
        evaluators[rule].set_model_mode("eval")
    for w_n in (0.0, 1e-6, 0.5):
        student = copy.deepcopy(new_kd.model)  # the release: stage-1 PromptKD with its vision prompts mixed
        learner = student.prompt_learner
        with torch.no_grad():
            learner.vision_ctx.copy_(w_n * theirs["vision_ctx"] + (1 - w_n) * learner.vision_ctx)
            for i, p in enumerate(learner.deep_vision):
                p.copy_(w_n * theirs[f"deep_vision.{i}"] + (1 - w_n) * p)
            student.eval()
            expected = student(images)
            got = {}
            for rule, evaluator in evaluators.items():
                decoupling.set_weights(evaluator.dpc_net, w_new=w_n)
                got[rule] = evaluator.model_inference(images)
        if w_n == 0:
            assert torch.equal(got["auto"], expected)
        torch.testing.assert_close(got["auto"], expected, rtol=0, atol=1e-4)
        if w_n == 0.5:  # mixing the projector too (the option) is another model
            assert (got["all"] - expected).abs().max() > 1e-2


def test_the_text_copy_encodes_only_the_pairs_classes(kd, tmp_path):
    """DPC.TEXT_CLASSES auto and pairs: the teacher-width text tower runs (with gradients) for the step's classes
    only, and the loss (L_CL plus the distillation term, which reads the teacher's stored features) and every
    gradient are those of the step over all base classes. MODEL.CHECKPOINT_TEXT reaches the teacher's text tower
    and changes neither."""
    from tests.test_dpc_text_classes import assert_same_step, one_step
    from trainers.encoders import checkpoint_text

    dpc = build(kd, "DPC_PromptKD", STAGE2, tmp_path / "dpc", "DATASET.SUBSAMPLE_CLASSES", "base",
                "DPC.STAGE1_DIR", str(kd["dirs"]["promptkd"]), "DPC.PARALLEL_LOSS", "True", "MODEL.CHECKPOINT_TEXT",
                "True", "DATALOADER.TRAIN_X.BATCH_SIZE", "1", "DPC.TOPK", "2")  # L <= 2 pairs of the 3 base classes
    assert dpc.teacher.text_encoder.checkpoint
    dpc.before_train()
    dpc.set_model_mode("train")
    batch = next(iter(dpc.train_loader_x))
    images, labels = batch["img"], batch["label"]
    pairs = dpc.dpc_batch(images, labels)
    text = [dpc.teacher.text_encoder]
    everything = one_step(dpc, images, labels, pairs, text, "all")
    assert everything[3] == dpc.dm.num_classes and "kd" in everything[1]
    steps = {}
    for choice in ("auto", "pairs"):
        steps[choice] = one_step(dpc, images, labels, pairs, text, choice)
        assert dpc.dpc_text_plan.pairs and not dpc.dpc_text_plan.terms_on_pairs
        assert steps[choice][3] == len(set(pairs[1].tolist())) <= len(pairs[1]) < dpc.dm.num_classes
        assert_same_step(steps[choice], everything)
        assert steps[choice][1]["kd"] == everything[1]["kd"]
    checkpoint_text(dpc.teacher, False)
    assert_same_step(one_step(dpc, images, labels, pairs, text, "auto"), steps["auto"])
