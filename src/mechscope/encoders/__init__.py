"""Encoders (and causal LMs) as sequence classifiers: `finetune` trains transformers' classification head and the
body on labeled texts, writes a model folder with metrics.json, curves.png and report.html (see docs/encoders.md).
"""
from .finetune import finetune

__all__ = ["finetune"]
