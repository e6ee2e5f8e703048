"""Attention: the patterns of every layer and head in an offline viewer (`mechscope attention`)."""
from .data import AttentionPatterns, attention_patterns
from .outputs import view, write_outputs

__all__ = ["AttentionPatterns", "attention_patterns", "view", "write_outputs"]
