"""Models for the head-score tests: a GPT-2 with a previous-token head and an induction head set by hand, and a
2-layer attention-only GPT-2 (MLPs zeroed and frozen) trained on repeated random sequences."""
from __future__ import annotations

import torch

from mechscope.model import Model
from mechscope.tiny import char_tokenizer

N_POS = 32


def _pm(x: torch.Tensor) -> torch.Tensor:
    """A vector of the designed basis written as [x, -x]: zero mean, so LayerNorm only rescales it."""
    return torch.cat([x, -x], -1)


def planted_model() -> Model:
    """GPT-2, 2 layers x 4 heads, MLPs zero. L0H0 attends from i to i-1 and copies token[i-1] into a 'previous
    token' subspace; L1H0 attends from i to every j whose previous token equals token[i] (induction) and copies
    token[j] into the logits. Every other head has zero weights (uniform attention, zero output)."""
    import transformers as tf

    tok = char_tokenizer()
    V, P = len(tok), N_POS
    B = V + P + V  # basis: token one-hot | position one-hot | previous-token one-hot
    D, H = 2 * B, 4
    dh = D // H
    cfg = tf.GPT2Config(vocab_size=V, n_embd=D, n_layer=2, n_head=H, n_positions=P, n_inner=8,
                        bos_token_id=2, eos_token_id=3, attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)
    hf = tf.GPT2LMHeadModel(cfg).eval()
    tokd, posd, prevd = torch.arange(V), V + torch.arange(P), V + P + torch.arange(V)
    with torch.no_grad():
        for p in hf.parameters():
            p.zero_()
        for ln in [hf.transformer.ln_f] + [m for b in hf.transformer.h for m in (b.ln_1, b.ln_2)]:
            ln.weight.fill_(1.0)
        eye = torch.eye(B)
        hf.transformer.wte.weight.copy_(_pm(eye[tokd]))  # tied to the unembedding
        hf.transformer.wpe.weight.copy_(_pm(eye[posd]))
        a0, a1 = hf.transformer.h[0].attn, hf.transformer.h[1].attn
        q, k, v = 0, D, 2 * D  # column offsets of q, k, v in c_attn (head 0 = its first dh columns)
        # L0H0: q_i = e_{i-1}, k_j = e_j (positions) -> attends i -> i-1; v = token one-hot -> previous-token dims
        a0.c_attn.weight[posd[1:], q + torch.arange(P - 1)] = 2.0
        a0.c_attn.weight[posd, k + torch.arange(P)] = 2.0
        a0.c_attn.weight[tokd, v + torch.arange(V)] = 1.0
        a0.c_proj.weight[torch.arange(V)] = 0.1 * _pm(eye[prevd])
        # L1H0: q_i = token[i], k_j = previous token at j -> induction; v = token[j] -> written onto the token dims
        a1.c_attn.weight[tokd, q + torch.arange(V)] = 2.0
        a1.c_attn.weight[prevd, k + torch.arange(V)] = 2.0
        a1.c_attn.weight[tokd, v + torch.arange(V)] = 1.0
        a1.c_proj.weight[torch.arange(V)] = 0.6 * _pm(eye[tokd])
    return Model(hf, tok, name="planted-gpt2")
