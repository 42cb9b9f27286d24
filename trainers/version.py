"""The code behaviour version: which results this code gives for given options, weights and data.

Bump ``BEHAVIOUR_VERSION`` in the commit that changes what any run trains or evaluates to (a number in a
log, a checkpoint or an accuracy), and add a line saying what changed to ``CHANGES``; a refactoring that
keeps every number leaves it alone (CONTRIBUTING.md; ``tests/test_provenance.py`` fails on a version
without its line). Every run records the version in its fingerprint: a finished run of another version is
not reused, an interrupted one not resumed.
"""

BEHAVIOUR_VERSION = 3

CHANGES = {
    1: "first recorded version (runs from before it are 'version unknown': reused with a notice, never resumed)",
    2: "DPC_PromptKD as the release: x1/w_b on the text copy's context only (the student's prompts and projector "
       "train plainly), new classes with stage 1's projector and BN statistics, negatives through the test transform",
    3: "DPC stage 2 encodes the text of the step's pairs' classes only (DPC.TEXT_CLASSES auto; before: every base "
       "class): same loss and gradients to fp32 rounding (~1e-6) for DPC_CoOp, DPC_MaPLe, DPC_IVLP, DPC_CoCoOp (one "
       "text row per pair), DPC_PromptKD, DPC_PromptSRC / DPC_KgCoOp with DPC.PARALLEL_LOSS False, and upstream "
       "trainers through DPCMixin; DPC.TEXT_CLASSES all gives version 2's numbers",
}
