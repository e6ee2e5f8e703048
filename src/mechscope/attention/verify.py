"""The causal check of head scores: ablate the top-K induction heads (their `attn.hook_z`) and measure the loss on
the repeated half, next to ablating K random heads, several random draws.

Loss on the repeated half: mean cross-entropy of the next token at every query position that has an induction target
and a next token (on [BOS] + r + r with n = seq_len: positions n+1 .. 2n-1, predicting tokens n+2 .. 2n), averaged
over positions and then over sequences. Zero ablation sets a head's z to 0; mean ablation sets it to the mean of
that head's z over every position of the scored sequences. The clean run, the top-K run and every random draw are
rows of the same batched forwards (each row carries its own set of ablated heads).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .targets import target_masks

ABLATIONS = ("zero", "mean")


def check_verify(k: Optional[int], ablation: str = "zero", draws: int = 5, n_total: Optional[int] = None) -> None:
    """Argument checks for the causal check; `n_total` (heads in the model) once the model is known."""
    if ablation not in ABLATIONS:
        raise ConfigError(f"ablation={ablation!r} is not valid. Use 'zero' or 'mean'.", "ablation")
    if k is None:
        return
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"verify={k!r} is not a number of heads. Give K >= 1 (the top-K induction heads are "
                          "ablated), or leave it out to skip the causal check.", "verify")
    if not isinstance(draws, int) or draws < 1:
        raise ConfigError(f"draws={draws!r}: give at least 1 random draw of K heads to compare with.", "draws")
    if n_total is not None and 2 * k > n_total:
        raise ConfigError(f"verify={k}: this model has {n_total} heads, so K random heads other than the top K "
                          f"cannot be drawn. Use K <= {n_total // 2}.", "verify")


def loss_positions(tokens) -> torch.Tensor:
    """(T,) bool: query positions with an induction target and a next token (where the repeated-half loss is read)."""
    m = target_masks(tokens)[4]  # induction mask (T, T)
    has = m.sum(-1) > 0
    has[-1] = False
    return has


def _z_means(model, sequences, batch_size: int) -> torch.Tensor:
    """(L, H, d_head) mean of every head's z over all positions of the sequences."""
    L = model.cfg.n_layers
    sites = [f"blocks.{layer}.attn.hook_z" for layer in range(L)]
    total, count = None, 0
    for s in range(0, len(sequences), batch_size):
        _, cache = model.run(sequences[s:s + batch_size], capture=sites, logits=False)
        mask = cache.attention_mask
        z = torch.stack([cache[n][mask].float().sum(0) for n in sites])  # (L, H, D)
        total = z if total is None else total + z
        count += int(mask.sum())
    return total / count


def _ablate(fill: torch.Tensor, head_mask: torch.Tensor):
    """Patch function for one layer's z (b, T, H, D): heads where head_mask (b, H) is True take `fill` (H, D)."""
    def fn(z):
        keep = ~head_mask.to(z.device)[:, None, :, None]  # (b, 1, H, 1)
        return torch.where(keep, z, fill.to(z.device, z.dtype)[None, None])
    return fn


def ablated_losses(model, sequences, variants: torch.Tensor, ablation: str = "zero",
                   batch_size: Optional[int] = None) -> np.ndarray:
    """(V, B) repeated-half loss of each sequence with the heads of each variant (V, L, H bool) ablated."""
    cfg = model.cfg
    t = max(map(len, sequences))
    size = batch_size or max(1, int(2 ** 28 // (4 * t * cfg.d_vocab)))
    fill = _z_means(model, sequences, size) if ablation == "mean" else \
        torch.zeros(cfg.n_layers, cfg.n_heads, cfg.d_head)
    rows = [(v, b) for v in range(len(variants)) for b in range(len(sequences))]
    out = np.zeros((len(variants), len(sequences)))
    for s in range(0, len(rows), size):
        chunk = rows[s:s + size]
        seqs = [sequences[b] for _, b in chunk]
        hm = variants[[v for v, _ in chunk]]  # (b, L, H)
        patch = {f"blocks.{layer}.attn.hook_z": _ablate(fill[layer], hm[:, layer])
                 for layer in range(cfg.n_layers) if hm[:, layer].any()}
        logits, cache = model.run(seqs, patch=patch)
        logp = torch.log_softmax(logits.float(), -1)  # (b, T, V)
        ids = cache.input_ids
        nll = -logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]  # (b, T-1): loss of token i+1 read at i
        for r, ((v, b), seq) in enumerate(zip(chunk, seqs)):
            pos = loss_positions(seq)[:-1].to(nll.device)
            pos = torch.nn.functional.pad(pos, (0, nll.shape[1] - pos.shape[0]))
            out[v, b] = float(nll[r][pos].mean())
    return out


def verify_heads(model, inputs, induction_scores, k: int, ablation: str = "zero", draws: int = 5, seed: int = 0,
                 batch_size: Optional[int] = None) -> dict:
    """Ablate the top-k induction heads and `draws` sets of k random other heads; repeated-half losses before/after."""
    check_verify(k, ablation, draws, model.cfg.n_layers * model.cfg.n_heads)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    s = np.nan_to_num(np.asarray(induction_scores, dtype=float), nan=-np.inf).reshape(-1)
    top = np.argsort(-s, kind="stable")[:k]
    others = np.setdiff1d(np.arange(L * H), top)
    rng = np.random.default_rng(seed)
    picks = [top] + [rng.choice(others, size=k, replace=False) for _ in range(draws)]
    variants = torch.zeros(1 + len(picks), L, H, dtype=torch.bool)  # variant 0: nothing ablated
    for v, heads in enumerate(picks, start=1):
        variants[v].view(-1)[torch.as_tensor(heads)] = True
    seqs = [list(t) for t in inputs.tokens]
    usable = [b for b, t in enumerate(seqs) if loss_positions(t).any()]
    if not usable:
        raise DataError("verify: no scored sequence repeats a token, so there is no repeated half to read the loss "
                        "on. Use the repeated random sequences (leave out --prompts) or prompts that repeat text.",
                        "verify")
    losses = ablated_losses(model, [seqs[b] for b in usable], variants, ablation, batch_size)
    mean = losses.mean(1)
    as_pairs = lambda idx: [[int(i // H), int(i % H)] for i in sorted(idx)]  # noqa: E731
    random = [{"heads": as_pairs(p), "loss_after": float(m), "increase": float(m - mean[0])}
              for p, m in zip(picks[1:], mean[2:])]
    rand_inc = np.array([r["increase"] for r in random])
    return {
        "k": k, "ablation": ablation, "draws": draws, "site": "blocks.{L}.attn.hook_z",
        "loss": "mean next-token cross-entropy on the repeated half (query positions with an induction target)",
        "top_heads": as_pairs(top), "loss_before": float(mean[0]), "loss_after": float(mean[1]),
        "increase": float(mean[1] - mean[0]),
        "increase_spread": float(np.std(losses[1] - losses[0], ddof=1)) if losses.shape[1] > 1 else 0.0,
        "random": random, "random_increase_mean": float(rand_inc.mean()),
        "random_increase_max": float(rand_inc.max()),
        "sequences": usable, "per_sequence": {"before": losses[0].tolist(), "after": losses[1].tolist()},
    }
