"""Prompt learners for CLIP (CoOp, CoCoOp, KgCoOp, MaPLe, IVLP, PromptSRC) and the DPC plug-in.

Importing this package registers nothing; ``train.py`` imports the Dassl trainer modules.
The model code (``trainers.models``, ``trainers.encoders``, ``trainers.clip_loader``) and the
pure DPC parts (``trainers.dpc``) import without Dassl.

Importing it hides our dependencies' deprecation notices (clip's pkg_resources, ...) unless verbose output
was asked for (``trainers.console``), so that every entry point and tool runs quietly.
"""
from . import console  # noqa: F401

