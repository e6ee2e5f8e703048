"""A decoder-only language model's forward pass from scratch, in plain torch, reading a real model's weights.

`from_scratch(model)` takes a Hugging Face causal LM (or a mechscope Model, whose `.hf` it reads) and returns a
module whose `forward(input_ids)` returns the logits, computed here line by line with nothing but matrix products,
softmax and the norms written out. Two families: GPT-2 (learned positions, LayerNorm, GELU) and Llama (rotary
positions, RMSNorm, SwiGLU, grouped-query attention; also Mistral and Qwen2, which add biases to q, k, v).

Pass `record(site_name, tensor)` to `forward` to see every canonical site as it is computed (names as in
TransformerLens: hook_embed, blocks.{L}.attn.hook_pattern, ...). The tests check that every site and the logits
equal the Hugging Face forward; `mechscope.lab.compare` does the same check for your own forward.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def _no_record(name, tensor):
    pass


def layer_norm(x, weight, bias, eps):
    """(x - mean) / sqrt(var + eps) over the last axis, then scale and shift."""
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def rms_norm(x, weight, eps):
    """x / sqrt(mean(x^2) + eps) over the last axis, then scale (no mean subtracted, no bias)."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def causal_attention(q, k, v, record, layer):
    """q, k, v (B, H, T, d_head) -> z (B, T, H, d_head), recording the pattern and z."""
    T, d_head = q.shape[-2], q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_head)  # (B, H, T, T)
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)  # True where key is after query
    pattern = scores.masked_fill(future, float("-inf")).softmax(dim=-1)  # (B, H, T, T), rows sum to 1
    record(f"blocks.{layer}.attn.hook_pattern", pattern)
    z = (pattern @ v).transpose(1, 2)  # (B, T, H, d_head)
    record(f"blocks.{layer}.attn.hook_z", z)
    return z


class ScratchLM(nn.Module):
    """Holds the real model's weights in `self.w` (name -> tensor, shared with the model, not copied)."""

    def __init__(self, hf_model):
        super().__init__()
        self.config = hf_model.config
        self.w = dict(hf_model.state_dict())  # tied weights appear under both names
        eos = getattr(getattr(hf_model, "generation_config", None), "eos_token_id", None)
        self.eos = set([eos] if isinstance(eos, int) else (eos or []))

    def linear(self, x, name):
        """x @ W^T + b for the torch.nn.Linear `name` (the bias only where the model has one)."""
        bias = self.w.get(f"{name}.bias")
        return F.linear(x, self.w[f"{name}.weight"], bias)

    @torch.no_grad()
    def generate(self, input_ids, max_new_tokens: int):
        """Greedy decoding, the plain way: run the whole sequence again for each new token and append the
        argmax of the last position's logits; stop early at an end-of-sequence token. (1, T) -> (1, T + new)."""
        for _ in range(max_new_tokens):
            next_id = self.forward(input_ids)[:, -1].argmax(-1, keepdim=True)  # (1, 1)
            input_ids = torch.cat([input_ids, next_id], dim=1)
            if int(next_id) in self.eos:
                break
        return input_ids


class GPT2(ScratchLM):
    def forward(self, input_ids, record=_no_record):
        c, w = self.config, self.w
        B, T = input_ids.shape
        H, D = c.n_head, c.n_embd
        d_head = D // H
        tok = w["transformer.wte.weight"][input_ids]  # (B, T, D)
        pos = w["transformer.wpe.weight"][torch.arange(T, device=input_ids.device)].expand(B, T, D)  # (B, T, D)
        record("hook_embed", tok)
        record("hook_pos_embed", pos)
        x = tok + pos  # the residual stream (B, T, D)
        for L in range(c.n_layer):
            p = f"transformer.h.{L}."
            record(f"blocks.{L}.hook_resid_pre", x)
            h = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], c.layer_norm_epsilon)
            qkv = h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]  # (B, T, 3D): GPT-2 stores W as (in, out)
            q, k, v = (t.view(B, T, H, d_head).transpose(1, 2) for t in qkv.split(D, dim=-1))  # (B, H, T, d_head)
            z = causal_attention(q, k, v, record, L)  # (B, T, H, d_head)
            attn_out = z.reshape(B, T, D) @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]  # (B, T, D)
            record(f"blocks.{L}.hook_attn_out", attn_out)
            x = x + attn_out
            record(f"blocks.{L}.hook_resid_mid", x)
            h = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], c.layer_norm_epsilon)
            post = F.gelu(h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"], approximate="tanh")  # (B, T, d_mlp)
            record(f"blocks.{L}.mlp.hook_post", post)
            mlp_out = post @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]  # (B, T, D)
            record(f"blocks.{L}.hook_mlp_out", mlp_out)
            x = x + mlp_out
            record(f"blocks.{L}.hook_resid_post", x)
        x = layer_norm(x, w["transformer.ln_f.weight"], w["transformer.ln_f.bias"], c.layer_norm_epsilon)
        record("ln_final.hook_normalized", x)
        return x @ w["lm_head.weight"].T  # (B, T, vocab)


def rotary_cos_sin(T, d_head, theta, device):
    """cos, sin (T, d_head) of rotary position embeddings: frequency pair i of position t turns by t * theta^(-2i/d)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, d_head, 2, device=device).float() / d_head)  # (d_head / 2,)
    angles = torch.arange(T, device=device).float()[:, None] * inv_freq[None, :]  # (T, d_head / 2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, d_head): dims i and i + d_head/2 form pair i
    return angles.cos(), angles.sin()


def apply_rotary(x, cos, sin):
    """Rotate each pair (x_i, x_{i + d/2}) of x (B, H, T, d_head) by its position's angle."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)  # (-x2, x1)
    return x * cos + rotated * sin


class Llama(ScratchLM):
    def forward(self, input_ids, record=_no_record):
        c, w = self.config, self.w
        B, T = input_ids.shape
        H, H_kv, D = c.num_attention_heads, c.num_key_value_heads, c.hidden_size
        d_head = getattr(c, "head_dim", None) or D // H
        cos, sin = rotary_cos_sin(T, d_head, _rope_theta(c), input_ids.device)  # (T, d_head) each
        x = w["model.embed_tokens.weight"][input_ids]  # (B, T, D)
        record("hook_embed", x)
        for L in range(c.num_hidden_layers):
            p = f"model.layers.{L}."
            record(f"blocks.{L}.hook_resid_pre", x)
            h = rms_norm(x, w[p + "input_layernorm.weight"], c.rms_norm_eps)
            q = self.linear(h, p + "self_attn.q_proj").view(B, T, H, d_head).transpose(1, 2)  # (B, H, T, d_head)
            k = self.linear(h, p + "self_attn.k_proj").view(B, T, H_kv, d_head).transpose(1, 2)  # (B, H_kv, T, d_head)
            v = self.linear(h, p + "self_attn.v_proj").view(B, T, H_kv, d_head).transpose(1, 2)  # (B, H_kv, T, d_head)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
            k, v = k.repeat_interleave(H // H_kv, dim=1), v.repeat_interleave(H // H_kv, dim=1)  # (B, H, T, d_head)
            z = causal_attention(q, k, v, record, L)  # (B, T, H, d_head)
            attn_out = self.linear(z.reshape(B, T, H * d_head), p + "self_attn.o_proj")  # (B, T, D)
            record(f"blocks.{L}.hook_attn_out", attn_out)
            x = x + attn_out
            record(f"blocks.{L}.hook_resid_mid", x)
            h = rms_norm(x, w[p + "post_attention_layernorm.weight"], c.rms_norm_eps)
            post = F.silu(self.linear(h, p + "mlp.gate_proj")) * self.linear(h, p + "mlp.up_proj")  # (B, T, d_mlp)
            record(f"blocks.{L}.mlp.hook_post", post)
            mlp_out = self.linear(post, p + "mlp.down_proj")  # (B, T, D)
            record(f"blocks.{L}.hook_mlp_out", mlp_out)
            x = x + mlp_out
            record(f"blocks.{L}.hook_resid_post", x)
        x = rms_norm(x, w["model.norm.weight"], c.rms_norm_eps)
        record("ln_final.hook_normalized", x)
        return self.linear(x, "lm_head")  # (B, T, vocab)


def _rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    kind = params.get("rope_type", "default")
    if kind != "default":
        raise ValueError(f"from_scratch implements the original rotary embedding only, not rope_type={kind!r}")
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


FAMILIES = {"gpt2": GPT2, "llama": Llama, "mistral": Llama, "qwen2": Llama}


def from_scratch(model) -> ScratchLM:
    """The from-scratch forward of `model` (a mechscope Model or an HF causal LM), reading its weights.

    Families: gpt2, llama, mistral, qwen2 (with no sliding window shorter than the context). In fp32 it equals the
    Hugging Face forward to rounding; other dtypes run in the model's dtype."""
    hf = getattr(model, "hf", model)
    family = getattr(hf.config, "model_type", None)
    if family not in FAMILIES:
        raise ValueError(f"from_scratch has no forward for model family {family!r}; it has {sorted(FAMILIES)}")
    window = getattr(hf.config, "sliding_window", None) if getattr(hf.config, "use_sliding_window", True) else None
    n_ctx = getattr(hf.config, "max_position_embeddings", None) or getattr(hf.config, "n_positions", None)
    if window and n_ctx and window < n_ctx:
        raise ValueError(f"from_scratch attends to every earlier token; this model's sliding window ({window}) is "
                         f"shorter than its context ({n_ctx})")
    return FAMILIES[family](hf)
