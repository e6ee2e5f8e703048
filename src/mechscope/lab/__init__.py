"""mechscope.lab: the transformer lab, written to be read, and every piece proven against a real implementation.

    attention_np   NumPy scaled dot-product attention, multi-head attention, sinusoidal positional encoding
                   (equal to torch's F.scaled_dot_product_attention / nn.MultiheadAttention)
    blocks         PyTorch encoder block, decoder block, encoder-decoder; post-norm or pre-norm
                   (equal to nn.TransformerEncoderLayer / nn.TransformerDecoderLayer / nn.Transformer)
    scratch        from_scratch(model): a GPT-2 or Llama forward by hand, reading the model's weights
    copy_task      the encoder-decoder learning to copy sequences
    compare        compare(student, model, prompt): a hand-written forward against the real model, site by site

The teaching modules (attention_np, blocks, scratch, copy_task) import nothing from the rest of mechscope; only
`compare` (and the CLI's student loader) use mechscope's capture and errors.
"""
from .attention_np import (causal_mask, multi_head_attention, padding_mask, scaled_dot_product_attention,
                           sinusoidal_encoding, softmax)
from .blocks import DecoderBlock, EncoderBlock, EncoderDecoder, MultiHeadAttention
from .compare import Comparison, SiteDiff, compare
from .scratch import from_scratch

__all__ = ["scaled_dot_product_attention", "multi_head_attention", "sinusoidal_encoding", "softmax", "causal_mask",
           "padding_mask", "MultiHeadAttention", "EncoderBlock", "DecoderBlock", "EncoderDecoder", "from_scratch",
           "compare", "Comparison", "SiteDiff"]
