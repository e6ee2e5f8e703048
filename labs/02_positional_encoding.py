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
# # Sinusoidal positional encoding
#
# Attention by itself does not know the order of the tokens: permute the keys and values and each query's output
# is the same. "Attention Is All You Need" adds to every token embedding a vector that depends only on its
# position p:
#
# $$PE[p, 2i] = \sin(p\,\omega_i), \quad PE[p, 2i+1] = \cos(p\,\omega_i), \quad \omega_i = 10000^{-2i/d}.$$
#
# Each pair of columns is a point going round the unit circle at its own speed: fast on the left, slow on the
# right. This notebook draws it and checks the two properties that make it useful.

# %%
import numpy as np

from mechscope.lab.attention_np import frequencies, offset_rotation, sinusoidal_encoding
from mechscope.lab.figures import pe_figure

pe = sinusoidal_encoding(100, 64)  # (positions, d_model)
print(pe.shape, "first frequencies:", np.round(frequencies(64)[:4], 4))

# %% [markdown]
# ## The picture
#
# Positions go down, dimensions across. On the right: the dot product of the encodings of positions p and p + k,
# against k, for three starting positions p.

# %%
pe_figure(pe);

# %% [markdown]
# The three curves lie on top of each other: $PE[p] \cdot PE[p+k] = \sum_i \cos(k\,\omega_i)$, whatever p.
# Check it on numbers:

# %%
k = 7
dots = [pe[p] @ pe[p + k] for p in (0, 10, 50, 90)]
print("PE[p] . PE[p + 7] for p = 0, 10, 50, 90:", np.round(dots, 6))
print("sum_i cos(7 w_i):", round(float(np.cos(k * frequencies(64)).sum()), 6))
assert np.allclose(dots, np.cos(k * frequencies(64)).sum())

# %% [markdown]
# ## Moving k positions on is a rotation
#
# Because $\sin(a+b)$ and $\cos(a+b)$ are linear in $(\sin a, \cos a)$, there is one fixed matrix $M_k$ (a 2x2
# rotation by $k\,\omega_i$ per pair of columns) with $PE[p + k] = PE[p]\, M_k$ for every p. A linear layer can
# therefore learn to "look k positions back" in the same way at every position.

# %%
m = offset_rotation(k, 64)
err = np.abs(pe[:-k] @ m - pe[k:]).max()
print(f"max |PE[p] M_7 - PE[p + 7]| over all p: {err:.2e}")
assert err < 1e-9
print("M_7 is orthogonal:", np.allclose(m @ m.T, np.eye(64)))

# %% [markdown]
# ## Try it
#
# - Change the base (10000) in `sinusoidal_encoding(100, 64, base=...)`: what happens to the picture and to the
#   dot-product curve?
# - From the command line: `mechscope lab pe --out out/lab` saves the same picture as a PNG.
