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
# # Attention by hand
#
# Scaled dot-product attention, $\mathrm{softmax}(QK^\top/\sqrt{d_k})\,V$, first on three tokens with numbers small
# enough to follow, then multi-head, then on a real language model (the embedded SmolLM2-135M), where our NumPy
# attention must reproduce the model's own attention weights.

# %%
import numpy as np
import torch
import torch.nn.functional as F

from mechscope.lab.attention_np import (causal_mask, mha_params_from_torch, multi_head_attention,
                                        scaled_dot_product_attention, softmax, toy_self_attention)
from mechscope.lab.figures import attention_figure

np.set_printoptions(precision=3, suppress=True)

# %% [markdown]
# ## Three tokens, step by step
#
# Each token has a query (what it looks for), a key (what it offers) and a value (what it passes on).

# %%
Q = np.array([[1.0, 0.0, 1.0, 0.0], [0.0, 2.0, 0.0, 0.0], [1.0, 1.0, 0.0, 1.0]])  # (T=3, d_k=4)
K = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
V = np.array([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])  # (T=3, d_v=2)

scores = Q @ K.T / np.sqrt(Q.shape[1])  # (3, 3): row i = how well query i matches each key
weights = softmax(scores)  # each row sums to 1
out = weights @ V  # (3, 2): each output is a weighted average of the values
print("scores\n", scores, "\nweights\n", weights, "\nrow sums", weights.sum(1), "\noutput\n", out)

# %% [markdown]
# The same with `mechscope.lab.scaled_dot_product_attention` and with PyTorch's own kernel:

# %%
ours, ours_w = scaled_dot_product_attention(Q, K, V)
theirs = F.scaled_dot_product_attention(*(torch.tensor(a)[None] for a in (Q, K, V)))[0].numpy()
print("max |ours - by hand|:", np.abs(ours - out).max(), " max |ours - torch|:", np.abs(ours - theirs).max())
assert np.allclose(ours, theirs, atol=1e-12)

# %% [markdown]
# ## The causal mask
#
# A language model must not look at the future: query i may only attend to keys 0..i. Masked scores become
# $-\infty$ before the softmax, so their weights are exactly 0.

# %%
print(causal_mask(3).astype(int))
_, w_causal = scaled_dot_product_attention(Q, K, V, causal=True)
print(w_causal)
assert np.allclose(np.triu(w_causal, 1), 0)

# %% [markdown]
# With words: give each distinct word a random vector and use it as query, key and value (no projections). A
# word then attends most to itself and to its repeats.

# %%
words = "the cat sat on the mat".split()
_, w_words = toy_self_attention(words, causal=True)
attention_figure(words, w_words, "Toy causal self-attention (Q = K = V = X)");

# %% [markdown]
# ## Multi-head attention
#
# Project the inputs into H smaller query/key/value spaces, attend in each head separately, put the heads side by
# side and project back. Loaded with the weights of a `torch.nn.MultiheadAttention`, ours gives the same output
# and the same (per-head) weights.

# %%
torch.manual_seed(0)
mha = torch.nn.MultiheadAttention(embed_dim=8, num_heads=2, batch_first=True)
x = torch.randn(1, 5, 8)
ref, ref_w = mha(x, x, x, need_weights=True, average_attn_weights=False)
out_np, w_np = multi_head_attention(x.numpy(), x.numpy(), mha_params_from_torch(mha), n_heads=2)
print("max |output diff|:", np.abs(out_np - ref.detach().numpy()).max(),
      " max |weights diff|:", np.abs(w_np - ref_w.detach().numpy()).max())
assert np.allclose(out_np, ref.detach().numpy(), atol=1e-5)

# %% [markdown]
# ## On a real model
#
# SmolLM2-135M (Llama architecture) has 9 query heads and 3 key/value heads of width 64 per layer, and rotates
# queries and keys by their position (rotary embeddings) before the dot product. We take layer 0's query and key
# projections from a real forward, rotate them (`mechscope.lab.scratch.apply_rotary`), share each key head among
# its 3 query heads, and compute the weights with our NumPy attention. They must equal the weights the model
# itself computed (`blocks.0.attn.hook_pattern`).

# %%
import mechscope
from mechscope.lab.scratch import apply_rotary, rotary_cos_sin

model = mechscope.load()
cfg = model.hf.config
prompt = "When Mary and John went to the store, John gave a drink to"
layer = 0
sites = [f"module:model.layers.{layer}.self_attn.q_proj:out", f"module:model.layers.{layer}.self_attn.k_proj:out",
         f"blocks.{layer}.attn.hook_pattern"]
_, cache = model.run(prompt, capture=sites, logits=False)
H, H_kv = cfg.num_attention_heads, cfg.num_key_value_heads
d_head = cfg.hidden_size // H
T = cache.input_ids.shape[1]
q = cache[sites[0]].float().view(1, T, H, d_head).transpose(1, 2)  # (1, H, T, d_head)
k = cache[sites[1]].float().view(1, T, H_kv, d_head).transpose(1, 2)  # (1, H_kv, T, d_head)
theta = getattr(cfg, "rope_theta", None) or cfg.rope_parameters["rope_theta"]
cos, sin = rotary_cos_sin(T, d_head, theta, q.device)
q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
k = k.repeat_interleave(H // H_kv, dim=1)  # (1, H, T, d_head): grouped-query attention
_, weights = scaled_dot_product_attention(q.numpy(), k.numpy(), k.numpy(), causal=True)  # values unused here
real = cache[sites[2]].float().numpy()  # (1, H, T, T)
print(f"{T} tokens; max |our weights - model's weights| over all {H} heads: {np.abs(weights - real).max():.2e}")
assert np.allclose(weights, real, atol=1e-4)

# %%
tokens = model.to_str_tokens(cache.input_ids[0])
head = int(np.argmax([np.abs(np.diag(weights[0, h], -1)).mean() for h in range(H)]))  # most "previous token"
attention_figure(tokens, weights[0, head], f"SmolLM2 layer {layer}, head {head}, computed by hand");

# %% [markdown]
# ## Try it
#
# - Drop the $1/\sqrt{d_k}$ in the three-token example: how do the weights change? Why does it matter more for
#   wide heads?
# - Pick another layer: which heads attend to the previous token, which to the first token?
# - `mechscope lab attention --text "the cat sat on the mat" --causal --out out/lab` draws the toy picture as PNG.
