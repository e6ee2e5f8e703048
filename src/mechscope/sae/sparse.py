"""Sparse training kernels for TopK / BatchTopK SAEs, in plain PyTorch (CPU and GPU).

A dense TopK step does six (batch x d_in x d_sae) matmuls: encoder and decoder forward, and two backward each. Only
k of the d_sae latents of a token are non-zero, so five of them are almost all zeros. Here only the encoder forward
(to choose the latents) is dense; everything else touches the selected (token, latent) pairs only:

    decode          x_hat = embedding_bag(cols, W_dec, per_sample_weights=vals) + b_dec
    encoder grads   through `gather`: d vals / d (x, W_enc, b_enc) computed as a sparse (d_sae x batch) @ x
                    product, an embedding_bag over W_enc^T and an index_add: O(nnz * d_in) instead of
                    O(batch * d_sae * d_in).

Selections are COO lists sorted by row: rows, cols (nnz,), and offsets (batch,) where each row's entries start.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class _Gather(torch.autograd.Function):
    """vals = pre[rows, cols] where pre = x_c @ W_enc + b_enc was computed without autograd; sparse backward."""

    @staticmethod
    def forward(ctx, x_c, W_enc, b_enc, pre, rows, cols, offsets):
        ctx.save_for_backward(x_c, W_enc, rows, cols, offsets)
        return pre[rows, cols]

    @staticmethod
    def backward(ctx, g):
        x_c, W_enc, rows, cols, offsets = ctx.saved_tensors
        m = W_enc.shape[1]
        gx = gW = gb = None
        if ctx.needs_input_grad[0]:
            with torch.no_grad():
                gx = F.embedding_bag(cols, W_enc.t().contiguous(), offsets, mode="sum", per_sample_weights=g)
        if ctx.needs_input_grad[1]:
            sp = torch.sparse_coo_tensor(torch.stack([cols, rows]), g, (m, x_c.shape[0]), check_invariants=False)
            gW = torch.sparse.mm(sp, x_c).t()
        if ctx.needs_input_grad[2]:
            gb = torch.zeros(m, dtype=g.dtype, device=g.device).index_add_(0, cols, g)
        return gx, gW, gb, None, None, None, None


def gather(x_c, W_enc, b_enc, pre, rows, cols, offsets):
    return _Gather.apply(x_c, W_enc, b_enc, pre, rows, cols, offsets)


class _DecoderGrad(torch.autograd.Function):
    """Contributes zeros forward; backward gives d x_hat / d W_dec = sparse (d_sae x batch) @ grad, which is several
    times faster than embedding_bag's own dense weight backward."""

    @staticmethod
    def forward(ctx, W_dec, vals, rows, cols, batch):
        ctx.save_for_backward(vals, rows, cols)
        ctx.batch, ctx.n_latents = batch, W_dec.shape[0]
        return W_dec.new_zeros(batch, W_dec.shape[1])

    @staticmethod
    def backward(ctx, g):
        vals, rows, cols = ctx.saved_tensors
        sp = torch.sparse_coo_tensor(torch.stack([cols, rows]), vals, (ctx.n_latents, ctx.batch),
                                     check_invariants=False)
        return torch.sparse.mm(sp, g), None, None, None, None


def decode(W_dec, b_dec, rows, cols, offsets, vals):
    """x_hat = sum over selected (row, col) of vals * W_dec[col] + b_dec, with sparse gradients."""
    x_hat = F.embedding_bag(cols, W_dec.detach(), offsets, mode="sum", per_sample_weights=vals) + b_dec
    if W_dec.requires_grad and torch.is_grad_enabled():
        x_hat = x_hat + _DecoderGrad.apply(W_dec, vals.detach(), rows, cols, offsets.shape[0])
    return x_hat


def select_topk(pre: torch.Tensor, k: int):
    """Per-row top k: rows, cols, offsets."""
    b = pre.shape[0]
    idx = pre.topk(k, dim=-1, sorted=False).indices
    rows = torch.arange(b, device=pre.device).repeat_interleave(k)
    return rows, idx.reshape(-1), torch.arange(b, device=pre.device) * k


def select_batch_topk(pre: torch.Tensor, k: int):
    """The k * batch largest positive pre-activations of the batch: rows, cols, offsets (sorted by row)."""
    b, m = pre.shape
    flat = pre.relu().reshape(-1)
    idx = flat.topk(min(k * b, flat.numel()), sorted=False).indices
    idx = idx[flat[idx] > 0].sort().values
    rows, cols = idx // m, idx % m
    offsets = torch.searchsorted(rows, torch.arange(b, device=pre.device))
    return rows, cols, offsets
