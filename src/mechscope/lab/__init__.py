"""mechscope.lab: the transformer lab, written to be read, and every piece proven against a real implementation.

    attention_np   NumPy scaled dot-product attention, multi-head attention, sinusoidal positional encoding
                   (equal to torch's F.scaled_dot_product_attention / nn.MultiheadAttention)

The teaching modules import nothing from the rest of mechscope; only `compare` uses mechscope's capture.
"""
from .attention_np import (causal_mask, multi_head_attention, padding_mask, scaled_dot_product_attention,
                           sinusoidal_encoding, softmax)

__all__ = ["scaled_dot_product_attention", "multi_head_attention", "sinusoidal_encoding", "softmax", "causal_mask",
           "padding_mask"]
