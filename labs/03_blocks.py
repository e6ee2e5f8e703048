# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Encoder and decoder blocks
#
# A Transformer block is attention and a feed-forward network, each wrapped in a residual connection ("add") and
# a LayerNorm ("norm"). `mechscope.lab.blocks` writes them out in plain PyTorch, and each one loads the weights
# of its `torch.nn` counterpart and must compute the same function. This notebook checks that, and shows what
# post-norm and pre-norm mean.

# %%
import matplotlib.pyplot as plt
import torch
import torch.nn as nn

from mechscope.lab.blocks import DecoderBlock, EncoderBlock, EncoderDecoder
from mechscope.lab.figures import attention_figure

torch.manual_seed(0)
d_model, n_heads, d_ff = 16, 4, 32

# %% [markdown]
# ## The encoder block: self-attention, then feed-forward
#
# Post-norm (the 2017 paper): `x = norm(x + sublayer(x))`. Pre-norm (most models since): `x = x + sublayer(norm(x))`.
# The residual stream of a pre-norm model is never normalized inside the block, which keeps gradients healthy in
# deep stacks.

# %%
x = torch.randn(2, 6, d_model)  # (B, S, D)
for norm_first in (False, True):
    ref = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout=0.0, batch_first=True,
                                     norm_first=norm_first).eval()
    ours = EncoderBlock.from_torch(ref)
    with torch.no_grad():
        diff = (ours(x) - ref(x)).abs().max().item()
    print(f"{'pre-norm ' if norm_first else 'post-norm'} encoder block: max |ours - nn.TransformerEncoderLayer| "
          f"= {diff:.1e}")
    assert diff < 1e-5

# %% [markdown]
# Padding: a padded key must get no attention. Mark the last two positions of the second sequence as padding;
# the real positions' outputs must be the same as for the sequence without them.

# %%
padding = torch.zeros(2, 6, dtype=torch.bool)
padding[1, 4:] = True
with torch.no_grad():
    padded = ours(x, src_padding=padding)
    alone = ours(x[1:, :4])
print("max |padded - unpadded| on the real positions:", (padded[1, :4] - alone[0]).abs().max().item())
assert torch.allclose(padded[1, :4], alone[0], atol=1e-5)

# %% [markdown]
# ## The decoder block: masked self-attention, cross-attention, feed-forward
#
# The decoder's self-attention is causal (a target token sees only earlier target tokens); its cross-attention
# lets every target position look at the whole encoder output (the "memory").

# %%
memory = torch.randn(1, 5, d_model)  # (B, S, D) what the encoder produced
tgt = torch.randn(1, 4, d_model)  # (B, T, D) the target so far
ref = nn.TransformerDecoderLayer(d_model, n_heads, d_ff, dropout=0.0, batch_first=True).eval()
ours = DecoderBlock.from_torch(ref)
mask = nn.Transformer.generate_square_subsequent_mask(4)
with torch.no_grad():
    diff = (ours(tgt, memory) - ref(tgt, memory, tgt_mask=mask, tgt_is_causal=True)).abs().max().item()
print(f"decoder block: max |ours - nn.TransformerDecoderLayer| = {diff:.1e}")
assert diff < 1e-5

# %%
with torch.no_grad():
    h = ours.norm1(tgt + ours.self_attn(tgt, causal=True)[0])  # post-norm: the input of the cross-attention
    _, self_w = ours.self_attn(tgt, causal=True)
    _, cross_w = ours.cross_attn(h, context=memory)
attention_figure([f"t{i}" for i in range(4)], self_w[0, 0].numpy(), "Decoder self-attention, head 0 (causal)");
fig, ax = plt.subplots(figsize=(4, 3))
ax.imshow(cross_w[0, 0].numpy(), cmap="Blues", vmin=0, vmax=1)
ax.set_xlabel("memory position (encoder)")
ax.set_ylabel("target position")
ax.set_title("Cross-attention, head 0: every target sees all of the memory");

# %% [markdown]
# ## The whole encoder-decoder
#
# N encoder blocks, then N decoder blocks each reading the encoder's final output, with a LayerNorm after each
# stack, exactly as `nn.Transformer`.

# %%
ref = nn.Transformer(d_model, n_heads, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=d_ff,
                     dropout=0.0, batch_first=True).eval()
ours = EncoderDecoder.from_torch(ref)
src, tgt = torch.randn(2, 7, d_model), torch.randn(2, 5, d_model)
with torch.no_grad():
    diff = (ours(src, tgt) - ref(src, tgt, tgt_mask=nn.Transformer.generate_square_subsequent_mask(5),
                                 tgt_is_causal=True)).abs().max().item()
print(f"encoder-decoder: max |ours - nn.Transformer| = {diff:.1e}")
assert diff < 1e-5

# %% [markdown]
# ## Try it
#
# - Build `EncoderBlock(..., norm_first=True)` from a post-norm torch layer by hand (copy the weights yourself):
#   how large is the difference, and where does it come from?
# - Remove the causal mask in `DecoderBlock` and check which test of the comparison fails.
