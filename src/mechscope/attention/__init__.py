"""Attention: the patterns of every layer and head in an offline viewer (`mechscope attention`), and head scores
with baselines and their causal check (`mechscope heads`)."""
from .data import AttentionPatterns, attention_patterns
from .heads import SCORE_TYPES, HeadInputs, HeadsResult, head_scores, score_heads
from .outputs import view, write_outputs
from .verify import verify_heads

__all__ = ["AttentionPatterns", "attention_patterns", "view", "write_outputs", "SCORE_TYPES", "HeadInputs",
           "HeadsResult", "head_scores", "score_heads", "verify_heads"]
