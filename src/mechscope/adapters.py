"""Model-family knowledge, as data: where each canonical site lives on the real Hugging Face modules.

Paths are relative to the HF model object (e.g. `LlamaForCausalLM`); `{L}` is the layer index. If the model was
loaded without its head (`LlamaModel`), the leading `base` prefix is dropped when resolving.

Fields of an adapter:
  base        attribute holding the body (stripped when the model is the body itself)
  layers      the ModuleList of blocks
  embed       token embedding; pos_embed: learned position embedding (None for rotary models)
  attn        module whose output[0] is the attention output added to the residual (hook_attn_out)
  attn_core   module that calls the attention kernel (hook_pattern is taken there)
  attn_o      output projection; its input is hook_z (B, T, H * d_head)
  qkv         the q, k and v projections (three paths), or the one fused projection (one path): hook_q/k/v
  qkv_layout  how q, k, v sit in the projection outputs:
              "separate": three projections, each (B, T, heads * d_head)
              "fused": one output [q | k | v] along the last dim, of H, H_kv and H_kv heads (phi3, GPT-2)
              "interleaved": one output (B, T, H, 3, d_head): per head [q_h | k_h | v_h] (GPT-NeoX)
  rotary      q and k are rotated inside attention (hook_rot_q / hook_rot_k exist)
  mlp         module whose output is hook_mlp_out
  mlp_down    down projection; its input is mlp.hook_post (B, T, d_mlp)
  resid_mid   "attn_residual": pre-LN sequential block, resid_mid = resid_pre + attn_out (read and written through
              the `attn` output, the same addition the block performs)
              "module": post-LN block, resid_mid = output[0] of `resid_mid_module`
              None: no such point (parallel attention and MLP)
  ln_final    final norm (hook_normalized); None for post-LN encoders
  unembed     module mapping the final (normalized) residual stream to logits
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from .errors import MechscopeError


@dataclass(frozen=True)
class Adapter:
    family: str
    base: str
    layers: str
    embed: str
    attn: str
    attn_core: str
    attn_o: str
    mlp: str
    mlp_down: str
    unembed: str
    ln_final: Optional[str]
    pos_embed: Optional[str] = None
    resid_mid: Optional[str] = "attn_residual"
    resid_mid_module: Optional[str] = None
    causal: bool = True
    qkv: tuple = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
    qkv_layout: str = "separate"
    rotary: bool = True


LLAMA = Adapter(
    family="llama", base="model", layers="model.layers", embed="model.embed_tokens",
    attn="self_attn", attn_core="self_attn", attn_o="self_attn.o_proj",
    mlp="mlp", mlp_down="mlp.down_proj",
    ln_final="model.norm", unembed="lm_head",
)

GPT2 = Adapter(
    family="gpt2", base="transformer", layers="transformer.h", embed="transformer.wte",
    pos_embed="transformer.wpe", attn="attn", attn_core="attn", attn_o="attn.c_proj",
    mlp="mlp", mlp_down="mlp.c_proj",
    ln_final="transformer.ln_f", unembed="lm_head", qkv=("attn.c_attn",), qkv_layout="fused", rotary=False,
)

GPT_NEOX = Adapter(
    family="gpt_neox", base="gpt_neox", layers="gpt_neox.layers", embed="gpt_neox.embed_in",
    attn="attention", attn_core="attention", attn_o="attention.dense",
    mlp="mlp", mlp_down="mlp.dense_4h_to_h", resid_mid=None,
    ln_final="gpt_neox.final_layer_norm", unembed="lm_head", qkv=("attention.query_key_value",),
    qkv_layout="interleaved",
)

BERT = Adapter(
    family="bert", base="bert", layers="bert.encoder.layer", embed="bert.embeddings.word_embeddings",
    pos_embed="bert.embeddings.position_embeddings",
    attn="attention.output.dense", attn_core="attention.self", attn_o="attention.output.dense",
    mlp="output.dense", mlp_down="output.dense", resid_mid="module", resid_mid_module="attention",
    ln_final=None, unembed="cls", causal=False,
    qkv=("attention.self.query", "attention.self.key", "attention.self.value"), rotary=False,
)

ADAPTERS: dict[str, Adapter] = {
    "llama": LLAMA,
    "mistral": replace(LLAMA, family="mistral"),
    "qwen2": replace(LLAMA, family="qwen2"),
    # fused qkv_proj / gate_up_proj: hook_z / mlp.hook_post sit on o_proj / down_proj, hook_q/k/v slice qkv_proj
    "phi3": replace(LLAMA, family="phi3", qkv=("self_attn.qkv_proj",), qkv_layout="fused"),
    "gpt2": GPT2,
    "gpt_neox": GPT_NEOX,
    "bert": BERT,
}


def adapter_for(config) -> Adapter:
    """The adapter for an HF config, detected from `config.model_type`."""
    family = getattr(config, "model_type", None)
    if family not in ADAPTERS:
        raise MechscopeError(
            f"Unsupported model family {family!r} (from the model's config.model_type). Supported families: "
            f"{', '.join(sorted(ADAPTERS))}. Any module can still be captured or patched through the escape hatch "
            "site 'module:<dotted.module.path>:in' or ':out' (see `mechscope inspect` for the module tree)."
        )
    adapter = ADAPTERS[family]
    if family == "gpt_neox" and not getattr(config, "use_parallel_residual", True):
        adapter = replace(adapter, resid_mid="attn_residual")  # sequential NeoX has a real resid_mid
    return adapter
