"""Encoders (and causal LMs) as sequence classifiers and what their layers encode: `finetune` trains transformers'
classification head and the body on labeled texts (docs/encoders.md); `probe` fits per-layer probes with controls
and a causal check (docs/probes.md).
"""
from .finetune import finetune
from .probe import ProbeResult, probe

__all__ = ["finetune", "ProbeResult", "probe"]
