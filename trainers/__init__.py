"""Prompt learners for CLIP (CoOp, CoCoOp, KgCoOp, MaPLe, IVLP, PromptSRC) and the DPC plug-in.

Importing this package registers nothing; ``train.py`` imports the Dassl trainer modules.
The model code (``trainers.models``, ``trainers.encoders``, ``trainers.clip_loader``) and the
pure DPC parts (``trainers.dpc``) import without Dassl.
"""
