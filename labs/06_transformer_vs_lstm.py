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
# # Transformer vs LSTM, measured
#
# Why did Transformers replace recurrent networks? The usual answers are "attention can look anywhere" and
# "training parallelizes over the sequence". Both are true, and both have a price: a Transformer's memory for
# generation grows with the context, and some things a recurrent state does naturally (keep a running count)
# are hard for it. This notebook builds the two models with the same number of parameters, trains them on the
# same batches, and measures both sides.
#
# Everything here runs in seconds on a CPU with tiny settings, so the numbers are noisy. The full run
# (`mechscope lab rnn-vs-transformer --out out/rnn`) and its figures are described in `docs/lab-rnn.md`.

# %%
import torch
from IPython.display import Image, display

from mechscope.lab import rnn_tasks
from mechscope.lab.rnn_models import build_pair, n_params
from mechscope.lab.rnn_timing import state_bytes
from mechscope.lab.rnn_vs_transformer import Config, accuracy, run, train

torch.set_num_threads(1)

# %% [markdown]
# ## Two models, one parameter budget
#
# The Transformer has 2 pre-norm blocks (causal self-attention + MLP) on top of a token embedding and sinusoidal
# positions. The LSTM has the same embedding width and depth; its hidden size is chosen so that its parameter
# count is as close as possible to the Transformer's.

# %%
transformer, lstm = build_pair(vocab=2, d_model=32, n_layers=2, n_heads=4, max_len=512, seed=0)
print(f"Transformer: {n_params(transformer):,} parameters")
print(f"LSTM:        {n_params(lstm):,} parameters (hidden size {lstm.hidden})")

# %% [markdown]
# ## The three tasks
#
# Each task is next-token prediction; the model is scored only where the answer is defined (`-100` elsewhere).

# %%
gen = torch.Generator().manual_seed(0)
for task, size in (("copy", 4), ("induction", 5), ("parity", 10)):
    ids, targets = rnn_tasks.make_batch(task, gen, 1, size)
    print(f"{task:9s} ids     {ids[0].tolist()}")
    print(f"{'':9s} targets {targets[0].tolist()}")

# %% [markdown]
# In **copy**, `8` is a blank and `9` is GO: after GO the model must repeat the three symbols it saw before the
# blanks. In **induction** the second half repeats the first, so from its second token on, the answer is "the
# token that followed this one last time". In **parity** the target is the XOR of all bits so far.
#
# ## Parity: trained on short strings, tested on longer ones
#
# Both models see the same 150 batches of strings of length 2 to 8.

# %%
cfg = Config(steps=150, batch=32, lr=1e-2, train_sizes={"parity": (2, 8)})
for name, model in (("Transformer", transformer), ("LSTM", lstm)):
    losses = train(model, "parity", cfg, seed=0)
    accs = {n: accuracy(model, "parity", n, 256)["token"] for n in (8, 16, 32)}
    print(f"{name:12s} final loss {sum(losses[-10:]) / 10:.3f}   per-token accuracy at length "
          + ", ".join(f"{n}: {a:.2f}" for n, a in accs.items()))

# %% [markdown]
# One bit of recurrent state solves parity at any length, and an LSTM usually finds it. A Transformer must
# recompute the XOR of the whole prefix at every position from attention averages, and its absolute positions
# beyond the training length were never trained: its accuracy typically falls towards chance (0.5) on the longer
# strings. (With so few steps either model may also fail inside the training range; rerun with more steps.)
#
# ## What generation keeps between tokens
#
# To generate the next token, the Transformer keeps every past key and value (its KV cache); the LSTM keeps
# (h, c), whose size does not depend on how much it has read.

# %%
for context in (16, 64, 256):
    print(f"context {context:4d}: KV cache {state_bytes(transformer, 2, context):8,} bytes, "
          f"LSTM state {state_bytes(lstm, 2, context):,} bytes")

# %% [markdown]
# ## The whole comparison
#
# `run` does all of it: every task, both models, several seeds, then timing and memory against the sequence
# length. `Config.tiny()` is small enough to finish in seconds (its numbers mean little); `Config.quick()` takes a
# few minutes and `Config.full()` tens of minutes.

# %%
results = run("out/rnn", Config.tiny())
for name in ("copy.png", "induction.png", "parity.png", "train_step.png", "generation.png", "state_memory.png"):
    display(Image(filename=f"out/rnn/{name}"))

# %% [markdown]
# The report (`out/rnn/report.html`) has the tables, the caveats and every figure on one page. Things to
# look for in a full run:
#
# - **training step time** grows faster with the length for the Transformer (attention is quadratic) but it is
#   one parallel pass, while the LSTM must walk the sequence step by step;
# - **generation**: with a KV cache, a Transformer token costs more as the context grows; without the cache it
#   is far worse; the LSTM's cost per token is flat;
# - **memory**: the KV cache grows linearly with the context, the LSTM state does not.

# %%
for line in results["caveats"]:
    print("-", line)
