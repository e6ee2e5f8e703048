"""What usually makes a hand-written forward diverge at each kind of site: one paragraph per kind, for `compare`."""
from __future__ import annotations

import torch

_POSITIONS = {
    "rotary": "rotary embeddings: applied to q and k (not v), after the projection and before the scores, pairing "
              "dimension i with i + d_head/2 (rotate_half), with the model's base theta and positions 0..T-1",
    "learned": "positions: the learned position embedding is added to the token embedding once, before block 0",
}

HINTS = {
    "embed": "The token embedding differs. Look up rows of the embedding matrix (W_E[input_ids]) for exactly the "
             "token ids you were given (the tokenizer may have added a BOS token), with no scaling: GPT-2 and "
             "Llama do not multiply by sqrt(d_model).",
    "pos_embed": "The position embedding differs. It is W_pos[arange(T)]: positions start at 0. An off-by-one, a "
                 "sinusoidal table in place of the learned one, or a missing batch axis shows here.",
    "resid_pre": "The residual stream entering the block differs while everything recorded before it matched. At "
                 "block 0 it is the token embedding (plus the position embedding where the model has one, added "
                 "once); later it is exactly the previous block's hook_resid_post, passed on unchanged (no norm "
                 "in between in a pre-norm model).",
    "pattern": "The attention pattern differs. Usual causes, most common first: the scale (divide the scores "
               "q @ k^T by sqrt(d_head), not by d_head or sqrt(d_model)); the causal mask (query i sees keys 0..i "
               "only: set the later scores to -inf before the softmax, not the weights to 0 after it); {positions}; "
               "the head split (view (B, T, H, d_head) then transpose to (B, H, T, d_head)); grouped-query attention "
               "(each key/value head serves H / H_kv consecutive query heads: repeat_interleave, not repeat); the "
               "softmax axis (over "
               "the keys, the last axis); the norm placement (a pre-norm block normalizes the stream before the "
               "attention reads it); a missing bias on q, k or v.",
    "z": "The pattern matched but z (the heads' outputs, before the output projection) differs: check the value "
         "projection and its bias, the q/k/v order of a fused projection, grouped-query attention (each key/value "
         "head serves H / H_kv consecutive query heads: repeat_interleave, not repeat), and pattern @ v followed by "
         "transpose(1, 2) to (B, T, H, d_head).",
    "attn_out": "z matched but the attention output differs: the output projection. Merge the heads back in order "
                "(transpose(1, 2), then reshape to (B, T, H * d_head)); mind the weight's orientation (nn.Linear "
                "computes x @ W^T; GPT-2's Conv1D stores W as (in, out), used as x @ W); and add the output bias "
                "where the model has one (GPT-2's attn.c_proj.bias).",
    "resid_mid": "The attention output matched but resid_mid differs: the residual add. resid_mid = resid_pre + "
                 "attn_out, the un-normalized stream plus the attention output. A LayerNorm applied after the add "
                 "(post-norm, the original Transformer) where the model is pre-norm shows here: a pre/post norm "
                 "swap.",
    "mlp_post": "resid_mid matched but the MLP's hidden activation differs: the norm placement (a pre-norm block "
                "feeds the MLP norm(resid_mid), with ln_2 / post_attention_layernorm, not the raw stream), that "
                "norm's epsilon, the activation (GPT-2: GELU with the tanh approximation; Llama: SiLU(gate) * up), "
                "or the up-projection's bias.",
    "mlp_out": "The MLP's hidden activation matched but its output differs: the down projection, its weight "
               "orientation and its bias (GPT-2's mlp.c_proj.bias).",
    "resid_post": "The block's output differs while its parts matched: resid_post = resid_mid + mlp_out. Check the "
                  "residual add, and that a pre-norm block applies no norm after it (a post-norm block would).",
    "ln_final": "The final norm differs: GPT-2 uses LayerNorm (mean subtracted, with bias), Llama RMSNorm (no mean, "
                "no bias, x / sqrt(mean(x^2) + eps) * weight). Check the epsilon (layer_norm_epsilon / "
                "rms_norm_eps) and that it is applied once, to the last block's output.",
    "logits": "Every recorded site matched but the logits differ: the unembedding. logits = ln_final output @ W_U, "
              "with W_U = lm_head.weight transposed (tied to the token embedding in GPT-2 and SmolLM2), and no norm "
              "applied twice. Record more sites (ln_final.hook_normalized, the last hook_resid_post) to narrow it.",
    "module": "This module-level site differs; record the canonical sites around it to find the first step that "
              "goes wrong.",
}


def hint_for(kind: str, name: str, adapter) -> str:
    """The paragraph for the first diverging site `name` of kind `kind` on a model with `adapter`."""
    text = HINTS.get(kind, HINTS["module"])
    return text.replace("{positions}", _POSITIONS["learned" if adapter.pos_embed else "rotary"])


def observations(kind: str, mine: torch.Tensor, real: torch.Tensor) -> str:
    """Facts about a diverging tensor that point at a cause (empty when nothing specific is seen)."""
    if torch.isnan(mine).any():
        return "the student's tensor has NaN"
    if kind != "pattern" or mine.ndim != 4 or mine.shape[-1] != mine.shape[-2]:
        return ""
    t = mine.shape[-1]
    future = torch.ones(t, t, dtype=torch.bool).triu(1)  # (T, T) above the diagonal
    seen = []
    if t > 1 and float(mine[..., future].abs().max()) > 1e-6:
        seen.append("weight on future positions: no causal mask")
    if not torch.allclose(mine.sum(-1), torch.ones(()), atol=1e-4):
        seen.append("rows do not sum to 1: softmax over the wrong axis, or masking after it")
    flat, sharp = _entropy(mine), _entropy(real)
    if not seen and abs(flat - sharp) > 0.05 * max(sharp, 1e-3):
        seen.append(f"the pattern is {'flatter' if flat > sharp else 'sharper'} than the real one (mean entropy "
                    f"{flat:.3f} vs {sharp:.3f} nats): a scale error?")
    return "; ".join(seen)


def _entropy(p: torch.Tensor) -> float:
    return float(-(p * torch.log(p.clamp_min(1e-30))).sum(-1).mean())
