"""What each model costs as the sequence grows: training step time, per-token generation time, memory.

Memory is counted, not sampled: `activation_bytes` adds up the distinct tensor storages autograd saves for the
backward pass during one training forward (the activation memory; parameters and their gradients are excluded,
they are the same size for both models by construction), and `state_bytes` is what generation carries from one
token to the next (the KV cache at that context length, or the LSTM's (h, c)). Python's tracemalloc does not see
PyTorch's tensor allocations, so it is not used.
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from .rnn_models import CausalTransformer


def _random_ids(vocab: int, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def train_step_seconds(model, vocab: int, batch: int, length: int, repeats: int = 5) -> float:
    """Median wall time of one AdamW step (forward, cross-entropy on every position, backward, update)."""
    ids = _random_ids(vocab, batch, length + 1)
    x, y = ids[:, :-1], ids[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for i in range(repeats + 1):  # the first step (allocations, lazy init) is not counted
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.no_grad()
def generation_seconds(model, vocab: int, context: int, new_tokens: int = 16, cached: bool = True) -> float:
    """Mean seconds per greedy token after a `context`-token prompt (batch 1); the prompt itself is not timed.

    cached=True uses the model's generation state (KV cache / LSTM state); cached=False re-runs the whole
    sequence for every token (the Transformer without a cache)."""
    ids = _random_ids(vocab, 1, context, seed=1)
    if cached:
        state = model.new_state(1, context + new_tokens)
        logits, state = model.step(ids, state)
    else:
        logits = model(ids)
    t0 = time.perf_counter()
    for _ in range(new_tokens):
        nxt = logits[:, -1:].argmax(-1)  # (1, 1)
        if cached:
            logits, state = model.step(nxt, state)
        else:
            ids = torch.cat([ids, nxt], dim=1)
            logits = model(ids)
    return (time.perf_counter() - t0) / new_tokens


def saved_bytes(fn, params=()) -> int:
    """Bytes of the distinct storages autograd saves for backward while `fn()` runs, not counting `params`."""
    skip = {p.untyped_storage().data_ptr() for p in params}
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in skip:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def activation_bytes(model, vocab: int, batch: int, length: int) -> int:
    """Activation memory of one training forward (batch, length): see `saved_bytes`."""
    ids = _random_ids(vocab, batch, length + 1)
    x, y = ids[:, :-1], ids[:, 1:]
    return saved_bytes(lambda: F.cross_entropy(model(x).flatten(0, 1), y.flatten()), model.parameters())


@torch.no_grad()
def state_bytes(model, vocab: int, context: int) -> int:
    """Bytes generation carries after reading `context` tokens (batch 1): the KV cache, or (h, c)."""
    ids = _random_ids(vocab, 1, context, seed=1)
    if isinstance(model, CausalTransformer):
        cache = model.new_state(1, context)
        model.step(ids, cache)
        return cache.nbytes()
    _, (h, c) = model.step(ids, None)
    return h.nelement() * h.element_size() + c.nelement() * c.element_size()


def measure(models: dict, vocab: int, lengths, batch: int, repeats: int, new_tokens: int, log=None) -> dict:
    """All four measures for each model at each length. `models`: name -> module (timed in eval mode)."""
    out = {"lengths": list(lengths), "batch": batch, "repeats": repeats, "new_tokens": new_tokens,
           "threads": torch.get_num_threads(), "train_step_s": {}, "generate_s_per_token": {},
           "activation_bytes": {}, "state_bytes": {}}
    for name, model in models.items():
        model.train()
        out["train_step_s"][name] = [train_step_seconds(model, vocab, batch, n, repeats) for n in lengths]
        out["activation_bytes"][name] = [activation_bytes(model, vocab, batch, n) for n in lengths]
        model.eval()
        out["generate_s_per_token"][name] = [generation_seconds(model, vocab, n, new_tokens) for n in lengths]
        out["state_bytes"][name] = [state_bytes(model, vocab, n) for n in lengths]
        if isinstance(model, CausalTransformer):
            out["generate_s_per_token"][name + " (no cache)"] = [
                generation_seconds(model, vocab, n, new_tokens, cached=False) for n in lengths]
        if log:
            log(f"timing: {name} done")
    return out
