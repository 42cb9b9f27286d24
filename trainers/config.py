"""Our config keys on top of Dassl's defaults (``extend_cfg`` is called by ``train.py``)."""
from yacs.config import CfgNode as CN

from .dept.config import add_dept_config
from .dpc.config import add_dpc_config


def extend_cfg(cfg) -> None:
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"  # all | base | new (base-to-new protocol)
    cfg.DATASET.NUM_SHOTS = 0  # training images per class; 0: all of them (Dassl's default -1 is refused)
    # a training JPEG whose decoder reports damaged data: error (stop before training) | warn (train, name it)
    cfg.DATASET.IMAGE_WARNINGS = "error"
    cfg.MODEL.BACKBONE.PATH = ""  # CLIP weight file; empty: $DPC_CLIP_MODELS or ~/.cache/clip
    # NAME custom: INPUT.SIZE and the trainer's prompt depths follow the file's shapes (trainers/fit_clip.py)
    cfg.MODEL.BACKBONE.FIT_CUSTOM = True
    # activation checkpointing of the text tower's blocks while it runs with gradients (stage 1 and 2, PromptKD's
    # teacher text tower in DPC stage 2): less memory for many classes, one more text forward per step
    cfg.MODEL.CHECKPOINT_TEXT = False

    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 16  # number of context tokens (ignored when CTX_INIT is set)
    cfg.TRAINER.COOP.CSC = False  # class-specific context
    cfg.TRAINER.COOP.CTX_INIT = ""  # e.g. "a photo of a"
    cfg.TRAINER.COOP.PREC = "fp16"  # fp16 | fp32 | amp (fp16/amp fall back to fp32 without CUDA)
    cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"  # end | middle | front
    # tokens: one context vector per BPE token of CTX_INIT, CSC copies it per class | upstream (CoOp's code):
    # one per space-separated word, CSC ignored when CTX_INIT is set (see models/coop.py)
    cfg.TRAINER.COOP.CTX_INIT_RULE = "tokens"

    cfg.TRAINER.MAPLE = CN()
    cfg.TRAINER.MAPLE.N_CTX = 2
    cfg.TRAINER.MAPLE.CTX_INIT = "a photo of a"
    cfg.TRAINER.MAPLE.PREC = "fp16"
    cfg.TRAINER.MAPLE.PROMPT_DEPTH = 9  # layers with prompts (1 = input only)

    cfg.TRAINER.PROMPTSRC = CN()
    cfg.TRAINER.PROMPTSRC.N_CTX_VISION = 4
    cfg.TRAINER.PROMPTSRC.N_CTX_TEXT = 4
    cfg.TRAINER.PROMPTSRC.CTX_INIT = "a photo of a"
    cfg.TRAINER.PROMPTSRC.PREC = "fp16"
    cfg.TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION = 9
    cfg.TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT = 9
    cfg.TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT = 25.0
    cfg.TRAINER.PROMPTSRC.IMAGE_LOSS_WEIGHT = 10.0
    cfg.TRAINER.PROMPTSRC.GPA_MEAN = 15
    cfg.TRAINER.PROMPTSRC.GPA_STD = 1

    # CoCoOp (github KaiyangZhou/CoOp, train.py)
    cfg.TRAINER.COCOOP = CN()
    cfg.TRAINER.COCOOP.N_CTX = 16  # number of context tokens (ignored when CTX_INIT is set)
    cfg.TRAINER.COCOOP.CTX_INIT = ""
    cfg.TRAINER.COCOOP.PREC = "fp16"

    # KgCoOp (github htyao89/KgCoOp, train.py: there under TRAINER.COOP)
    cfg.TRAINER.KGCOOP = CN()
    cfg.TRAINER.KGCOOP.N_CTX = 16  # number of context tokens (ignored when CTX_INIT is set)
    cfg.TRAINER.KGCOOP.CSC = False  # class-specific context
    cfg.TRAINER.KGCOOP.CTX_INIT = ""
    cfg.TRAINER.KGCOOP.PREC = "fp16"
    cfg.TRAINER.KGCOOP.W = 1.0  # weight of the knowledge-guided term (published base-to-new runs: 8.0)
    cfg.TRAINER.KGCOOP.TEMPLATE = ""  # hand-written prompt with {} for the class; "": the dataset's CoOp template

    # IVLP (github muzairkhattak/multimodal-prompt-learning, train.py)
    cfg.TRAINER.IVLP = CN()
    cfg.TRAINER.IVLP.N_CTX_VISION = 2
    cfg.TRAINER.IVLP.N_CTX_TEXT = 2
    cfg.TRAINER.IVLP.CTX_INIT = "a photo of a"
    cfg.TRAINER.IVLP.PREC = "fp16"
    cfg.TRAINER.IVLP.PROMPT_DEPTH_VISION = 9  # layers with prompts; 0: no vision prompts
    cfg.TRAINER.IVLP.PROMPT_DEPTH_TEXT = 9  # >= 1

    # PromptKD (github zhengli97/PromptKD, train.py); the teacher is a PromptSRC run (trainers/promptkd_teacher.py)
    cfg.TRAINER.PROMPTKD = CN()
    cfg.TRAINER.PROMPTKD.N_CTX_VISION = 4  # student's vision prompt tokens
    cfg.TRAINER.PROMPTKD.PROMPT_DEPTH_VISION = 9  # student's prompted vision blocks (>= 1)
    cfg.TRAINER.PROMPTKD.CTX_INIT = "a photo of a"  # the teacher's text prompt (its learned tokens come from its file)
    cfg.TRAINER.PROMPTKD.PREC = "fp16"
    cfg.TRAINER.PROMPTKD.TEMPERATURE = 1.0
    cfg.TRAINER.PROMPTKD.KD_WEIGHT = 1.0  # published runs: 1000 (200 on fgvc_aircraft, oxford_flowers, dtd)
    cfg.TRAINER.PROMPTKD.TRAIN_IMAGES = "all-classes"  # all-classes: every train image, labels unused (published) | train-x
    cfg.TRAINER.PROMPTKD.TEACHER_NAME = "ViT-L/14"  # the teacher's CLIP
    cfg.TRAINER.PROMPTKD.TEACHER_PATH = ""  # its weight file; empty: $DPC_CLIP_MODELS or ~/.cache/clip
    cfg.TRAINER.PROMPTKD.TEACHER_DIR = ""  # a PromptSRC run on the base classes, or a folder with VLPromptLearner/model-best.pth.tar
    cfg.TRAINER.PROMPTKD.TEACHER_EPOCH = -1  # <= 0: the newest checkpoint (or model-best) in TEACHER_DIR
    cfg.TRAINER.PROMPTKD.DPC_SCORER = "teacher"  # DPC negatives scored by: teacher (the release) | student (stage-1 PromptKD)

    add_dpc_config(cfg)
    add_dept_config(cfg)
