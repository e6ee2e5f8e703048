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
# # A language model's forward pass from scratch, checked site by site
#
# `mechscope.lab.from_scratch(model)` is about a page of plain torch per family (GPT-2, Llama) that reads a real
# model's weights and computes its forward: embeddings, per-layer norm, attention (rotary positions and
# grouped-query heads for Llama), MLP, final norm, unembedding. It calls `record(site, tensor)` at every canonical
# site as it goes, so each intermediate result can be compared with the real model's. Then we break it on
# purpose and let `mechscope.lab.compare` find the bug.

# %%
import inspect

import matplotlib.pyplot as plt
import torch

import mechscope
from mechscope.lab import compare, from_scratch
from mechscope.lab.scratch import Llama

model = mechscope.load()  # the embedded SmolLM2-135M (Llama architecture), fp32 on the CPU
scratch = from_scratch(model)
print(model, "->", type(scratch).__name__)

# %% [markdown]
# The whole Llama forward (read it: every line is one step of the architecture):

# %%
print(inspect.getsource(Llama.forward))

# %% [markdown]
# ## Every site, and the logits, equal the real forward

# %%
prompt = "The capital of France is"
result = compare(scratch.forward, model, prompt)
print(result)
assert result.ok

# %%
names = [s.name for s in result.sites]
fig, ax = plt.subplots(figsize=(10, 3))
ax.semilogy(range(len(names)), [max(s.max_abs, 1e-12) for s in result.sites], "o-", ms=3)
ax.axhline(result.atol, color="red", ls="--", label=f"atol {result.atol:g}")
ax.set_xticks(range(0, len(names), 8), names[::8], rotation=60, ha="right", fontsize=7)
ax.set_ylabel("max |scratch - real|")
ax.set_title("From-scratch forward against the real model, site by site (forward order)")
ax.legend();

# %% [markdown]
# ## Greedy generation, the plain way
#
# `scratch.generate` reruns the whole sequence for each new token and appends the argmax. It must produce the
# same tokens as the model's own `generate` (which `mechscope generate` uses).

# %%
ids = torch.tensor([model.encode(prompt)])
mine = scratch.generate(ids, max_new_tokens=8)[0, ids.shape[1]:].tolist()
theirs = mechscope.generate(model, prompt, 8, greedy=True)
print("from scratch:", repr(model.tokenizer.decode(mine)))
print("model:       ", repr(theirs["completion"]))
assert model.tokenizer.decode(mine) == theirs["completion"]

# %% [markdown]
# ## A student's bug, found
#
# A forward written by a student has the signature `forward(input_ids, record) -> logits`. Here is one that
# forgets to divide the attention scores by $\sqrt{d_{head}}$ (we patch the from-scratch attention to do that).
# `compare` reports the first site that diverges and what usually causes a divergence there.

# %%
import math

from mechscope.lab import scratch as scratch_module

good_attention = scratch_module.causal_attention


def attention_without_scale(q, k, v, record, layer):
    return good_attention(q * math.sqrt(q.shape[-1]), k, v, record, layer)  # undoes the 1/sqrt(d_head)


scratch_module.causal_attention = attention_without_scale
try:
    buggy = compare(scratch.forward, model, prompt)
finally:
    scratch_module.causal_attention = good_attention
print("first divergence:", buggy.first_divergence)
print(buggy.hint)
assert buggy.first_divergence == "blocks.0.attn.hook_pattern"

# %% [markdown]
# ## Try it
#
# - Write your own forward in a file, `def forward(input_ids, record, model): ...`, and check it from the shell:
#   `mechscope lab compare --student my_gpt.py:forward --prompt "The capital of France is"`.
# - Plant another bug (forget the causal mask, use LayerNorm instead of RMSNorm, skip the rotary embedding) and
#   see where `compare` points.
