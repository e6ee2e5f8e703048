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


def letters_tokenizer(n: int = 20):
    """A word-level tokenizer over the first `n` lowercase letters (each one token) plus <pad>, <unk>, <s>, </s>."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<unk>", "<s>", "</s>"] + list("abcdefghijklmnopqrstuvwxyz"[:n]))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")


def attention_only(family: str = "llama", seed: int = 0, d_model: int = 64, n_heads: int = 4,
                   letters: int = 20) -> Model:
    """A 2-layer model whose MLPs are zero and frozen (attention only), random weights, a small letter vocabulary."""
    import transformers as tf

    tok = letters_tokenizer(letters)
    if family == "gpt2":
        cfg = tf.GPT2Config(vocab_size=len(tok), n_embd=d_model, n_layer=2, n_head=n_heads, n_positions=2 * N_POS,
                            n_inner=4, bos_token_id=2, eos_token_id=3, attn_pdrop=0.0, resid_pdrop=0.0,
                            embd_pdrop=0.0)
    else:
        cfg = tf.LlamaConfig(vocab_size=len(tok), hidden_size=d_model, num_hidden_layers=2, num_attention_heads=n_heads,
                             num_key_value_heads=n_heads, intermediate_size=4, max_position_embeddings=2 * N_POS,
                             bos_token_id=2, eos_token_id=3, pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(seed)
    hf = tf.AutoModelForCausalLM.from_config(cfg)
    for block in hf.base_model.layers if family != "gpt2" else hf.transformer.h:
        for p in block.mlp.parameters():
            p.requires_grad_(False)
            p.data.zero_()
    return Model(hf, tok, name=f"attn-only-{family}")


def train_induction(model: Model, steps: int = 300, seq_lens=(5, 16), batch: int = 32, lr: float = 3e-3,
                    seed: int = 0, log=None) -> list:
    """Next-token training on [BOS] + r + r sequences, a fresh random r and a random length n in `seq_lens` each
    step (a fixed n could be solved by a positional head at offset n - 1, with no induction); returns the loss on
    the repeated half (the predictions of tokens n+2 .. 2n) at every step."""
    import random
    from mechscope.attention.heads import repeated_inputs

    hf = model.hf.train()
    opt = torch.optim.AdamW([p for p in hf.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.98),
                            weight_decay=0.0)
    rng = random.Random(seed)
    history = []
    for step in range(steps):
        n = rng.randint(*seq_lens)
        ids = torch.tensor(repeated_inputs(model, seq_len=n, batch=batch, seed=seed * 100003 + step).tokens)
        logits = hf(input_ids=ids).logits  # (B, T, V)
        logp = torch.log_softmax(logits[:, :-1], -1)
        nll = -logp.gather(-1, ids[:, 1:, None])[..., 0]  # (B, T-1): loss of token t+1
        loss = nll[:, n:].mean()  # the repeated half: the first copy is noise the model cannot predict
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        opt.step()
        history.append(float(nll[:, n + 1:2 * n].mean().detach()))
        if log and step % 25 == 0:
            log(step, float(loss), history[-1])
    hf.eval()
    return history
