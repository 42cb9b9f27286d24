"""Prompt models (plain PyTorch, no Dassl): each is a ``PromptedCLIP`` with ``encode_image`` / ``encode_text``."""
