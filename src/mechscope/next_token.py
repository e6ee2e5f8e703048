"""What `mechscope next-token` shows: the most likely next tokens after a prompt, and the top-k row schema
{rank, id, token, logit, prob} that the patching results use too."""
from __future__ import annotations

import torch

from .errors import ConfigError, MechscopeError
from .tokens import require_text


def top_tokens(model, logits: torch.Tensor, k: int = 20) -> list[dict]:
    """The k most likely next tokens for one position's logits (V,), as rows {rank (1 = most likely), id, token
    (decoded text), logit, prob}."""
    logits = logits.float()
    probs = torch.softmax(logits, -1)  # (V,)
    p, idx = probs.topk(int(k))
    return [{"rank": r + 1, "id": int(i), "token": model.tokenizer.decode([int(i)]), "logit": float(logits[i]),
             "prob": float(v)} for r, (v, i) in enumerate(zip(p.tolist(), idx.tolist()))]


def check_top_k(top_k: int, vocab_size=None) -> int:
    """`top_k` if it is between 1 and the vocabulary size (when known), else an error naming top_k."""
    if int(top_k) < 1 or (vocab_size is not None and int(top_k) > vocab_size):
        raise ConfigError(f"top_k={top_k} must be between 1 and the vocabulary size"
                          + (f" {vocab_size}." if vocab_size is not None else "."), "top_k")
    return int(top_k)


def next_token_table(model, prompt: str, top_k: int = 20) -> list[dict]:
    """The top-k next tokens after `prompt` from one forward pass: rows {rank, id, token, logit, prob}."""
    require_text("prompt", prompt, blank_ok=True)
    check_top_k(top_k)
    model.require_lm_head("next-token")
    if not model.adapter.causal:
        raise MechscopeError(f"next-token: {model.name} is an encoder ({model.cfg.family}); it does not predict a "
                             "next token. Use a decoder model (gpt2, llama, ...).", "model")
    logits, _ = model.run(prompt)  # (1, T, V)
    last = logits[0, -1]  # (V,)
    return top_tokens(model, last, check_top_k(top_k, last.shape[-1]))
