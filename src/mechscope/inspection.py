"""What `mechscope inspect` shows: a model's config (each field explained), its module tree (identical blocks
collapsed), parameter counts per component and its sites with concrete shapes, as plain data."""
from __future__ import annotations

import re
from typing import Optional

import torch

from .sites import BLOCK_SITES, SITE_DOC, available_kinds

CONFIG_DOC = {
    "model_type": "model family (selects the HF classes and mechscope's adapter)",
    "architectures": "HF class that holds the weights",
    "hidden_size": "width of the residual stream (d_model)",
    "n_embd": "width of the residual stream (d_model)",
    "intermediate_size": "width of the MLP hidden layer (d_mlp)",
    "n_inner": "width of the MLP hidden layer (d_mlp; None means 4 x d_model)",
    "num_hidden_layers": "number of transformer blocks",
    "n_layer": "number of transformer blocks",
    "num_attention_heads": "number of attention (query) heads per block",
    "n_head": "number of attention (query) heads per block",
    "num_key_value_heads": "number of key/value heads (fewer than query heads = grouped-query attention)",
    "head_dim": "width of one attention head (d_head)",
    "vocab_size": "number of tokens in the vocabulary (d_vocab)",
    "max_position_embeddings": "longest sequence the model was built for, in tokens (n_ctx)",
    "n_positions": "longest sequence the model was built for, in tokens (n_ctx)",
    "original_max_position_embeddings": "context length before RoPE scaling extended it",
    "rope_theta": "RoPE base frequency (larger = slower-rotating positions, longer context)",
    "rope_parameters": "rotary position embedding settings (base frequency theta, scaling type)",
    "rope_scaling": "RoPE scaling used to extend the context (None = plain RoPE)",
    "rotary_pct": "fraction of each head's dimensions that get rotary embeddings",
    "partial_rotary_factor": "fraction of each head's dimensions that get rotary embeddings",
    "rms_norm_eps": "epsilon added inside RMSNorm for numerical stability",
    "layer_norm_eps": "epsilon added inside LayerNorm for numerical stability",
    "layer_norm_epsilon": "epsilon added inside LayerNorm for numerical stability",
    "hidden_act": "MLP activation function",
    "activation_function": "MLP activation function",
    "tie_word_embeddings": "the unembedding matrix is the token embedding matrix (one tensor, counted once)",
    "attention_bias": "the q/k/v/o projections have biases",
    "mlp_bias": "the MLP projections have biases",
    "attention_dropout": "dropout on attention probabilities during training (unused at inference)",
    "hidden_dropout_prob": "dropout on block outputs during training (unused at inference)",
    "attention_probs_dropout_prob": "dropout on attention probabilities during training (unused at inference)",
    "resid_pdrop": "dropout on the residual stream during training (unused at inference)",
    "embd_pdrop": "dropout on embeddings during training (unused at inference)",
    "attn_pdrop": "dropout on attention probabilities during training (unused at inference)",
    "sliding_window": "each token attends to at most this many previous tokens (None = full context)",
    "use_sliding_window": "whether the sliding-window attention limit is applied",
    "use_parallel_residual": "attention and MLP read the same input in parallel (no resid_mid)",
    "type_vocab_size": "number of segment (token type) embeddings",
    "position_embedding_type": "kind of position embedding",
    "initializer_range": "std of the random initialisation used in training",
    "bos_token_id": "id of the beginning-of-sequence token",
    "eos_token_id": "id of the end-of-sequence token (generation stops there)",
    "pad_token_id": "id of the padding token",
    "unk_token_id": "id of the unknown-token token",
    "use_cache": "generation reuses past keys/values (KV cache)",
    "pretraining_tp": "tensor-parallel degree used in pretraining (no effect here)",
    "dtype": "dtype the weights were saved in",
    "is_decoder": "the model is a decoder",
    "scale_attn_weights": "attention scores are divided by sqrt(d_head)",
}
_SKIP_CONFIG = {"transformers_version", "_name_or_path", "id2label", "label2id", "return_dict"}


def _config_rows(config) -> list[dict]:
    """Fields the model's config sets (plus documented ones even at their default), with an explanation each."""
    from transformers import PretrainedConfig

    base = PretrainedConfig().to_dict()
    rows = []
    for key, value in config.to_dict().items():
        if key.startswith("_") or key in _SKIP_CONFIG:
            continue
        if key in base and base[key] == value and (key not in CONFIG_DOC or value is None):
            continue  # a generic default every HF config carries
        rows.append({"field": key, "value": value, "explanation": CONFIG_DOC.get(key)})
    known = [r for r in rows if r["explanation"] is not None]
    return known + [r for r in rows if r["explanation"] is None]


def _module_line(name: Optional[str], module: torch.nn.Module) -> str:
    head = type(module).__name__
    if not list(module.children()):
        head += f"({module.extra_repr()})"
    return f"{name}: {head}" if name else head


def module_tree(module: torch.nn.Module, name: Optional[str] = None, indent: int = 0) -> list[str]:
    """The module tree, one line per module; runs of identical siblings collapse to `(0-29): 30 x Class`."""
    lines = ["  " * indent + _module_line(name, module)]
    children = list(module.named_children())
    i = 0
    while i < len(children):
        child_name, child = children[i]
        j = i + 1
        if child_name.isdigit():
            sig = repr(child)
            while j < len(children) and children[j][0].isdigit() and repr(children[j][1]) == sig:
                j += 1
        if j - i > 1:
            label = f"({child_name}-{children[j - 1][0]})"
            sub = module_tree(child, label, indent + 1)
            sub[0] = "  " * (indent + 1) + f"{label}: {j - i} x {type(child).__name__}"
            lines += sub
        else:
            lines += module_tree(child, f"({child_name})" if child_name.isdigit() else child_name, indent + 1)
        i = j
    return lines


def _under(model, name: str, mod_path: Optional[str]) -> bool:
    """Whether parameter `name` lives under the adapter path `mod_path` (its `base.` prefix optional)."""
    if not mod_path:
        return False
    base = model.adapter.base + "."
    paths = [mod_path] + ([mod_path[len(base):]] if mod_path.startswith(base) else [])
    return any(name == p or name.startswith(p + ".") for p in paths)


def _param_group(model, name: str, owner: torch.nn.Module) -> tuple[str, Optional[int]]:
    """(component, layer or None) of one parameter: embeddings / attention / mlp / norms / unembedding / other."""
    ad = model.adapter
    is_norm = "norm" in type(owner).__name__.lower()
    for layer in range(model.cfg.n_layers):
        block = f"{ad.layers}.{layer}"
        if _under(model, name, block):
            rest = name.split(f"{ad.layers.split('.')[-1]}.{layer}.", 1)[-1]
            if is_norm:
                return "norms", layer
            if "attn" in rest or "attention" in rest:
                return "attention", layer
            return "mlp", layer
    if _under(model, name, ad.embed) or _under(model, name, ad.pos_embed):
        return "embeddings", None
    if _under(model, name, ad.unembed):
        return "unembedding", None
    if is_norm:
        return "norms", None
    if "embed" in name:
        return "embeddings", None
    return "other", None


def param_counts(model) -> dict:
    """Parameters per component and in total. Shared (tied) tensors are counted once, under embeddings."""
    owners = dict(model.hf.named_modules())
    groups = {"embeddings": 0, "attention": 0, "mlp": 0, "norms": 0, "unembedding": 0, "other": 0}
    per_block: dict[int, int] = {}
    for name, p in model.hf.named_parameters():  # named_parameters yields a shared tensor once
        owner = owners[name.rsplit(".", 1)[0]] if "." in name else model.hf
        group, layer = _param_group(model, name, owner)
        groups[group] += p.numel()
        if layer is not None:
            per_block[layer] = per_block.get(layer, 0) + p.numel()
    blocks = [per_block.get(i, 0) for i in range(model.cfg.n_layers)]
    inp, out = model.hf.get_input_embeddings(), model.hf.get_output_embeddings()
    tied = bool(inp is not None and out is not None and out.weight is inp.weight)
    return {**groups, "per_block": blocks[0] if len(set(blocks)) == 1 else blocks, "blocks": sum(blocks),
            "total": sum(groups.values()), "tied_embeddings": tied}


def _site_descriptions() -> dict:
    out = {}
    for line in SITE_DOC.splitlines():
        m = re.match(r"\s+(\S+)\s+(\(.*?\))\s+(.*)$", line)
        if m:
            out[m.group(1).replace("blocks.{L}.", "")] = m.group(3).strip()
    return out


def site_table(model) -> list[dict]:
    """The model's sites with concrete shapes; per-block sites once, with their layer range."""
    c, ad = model.cfg, model.adapter
    sizes = {"d_model": c.d_model, "d_mlp": c.d_mlp, "d_head": c.d_head, "H": c.n_heads, "H_kv": c.n_kv_heads}
    desc = _site_descriptions()

    def concrete(shape: str) -> str:
        return re.sub(r"\b(d_model|d_mlp|d_head|H_kv|H)\b", lambda m: str(sizes[m.group(1)]), shape)

    rows = [{"site": "hook_embed", "layers": None, "shape": concrete("(B, T, d_model)"),
             "description": desc.get("hook_embed")}]
    if ad.pos_embed:
        rows.append({"site": "hook_pos_embed", "layers": None, "shape": concrete("(B, T, d_model)"),
                     "description": desc.get("hook_pos_embed")})
    span = f"0-{c.n_layers - 1}" if c.n_layers > 1 else "0"
    for kind in available_kinds(ad):
        suffix, shape, _ = BLOCK_SITES[kind]
        rows.append({"site": f"blocks.{{L}}.{suffix}", "layers": span, "shape": concrete(shape),
                     "description": desc.get(suffix)})
    if ad.ln_final:
        rows.append({"site": "ln_final.hook_normalized", "layers": None, "shape": concrete("(B, T, d_model)"),
                     "description": desc.get("ln_final.hook_normalized")})
    return rows


def describe(model) -> dict:
    """Everything `mechscope inspect` shows: config (explained), module tree, parameter counts, sites."""
    return {
        "name": model.name,
        "family": model.cfg.family,
        "cfg": model.cfg.to_dict(),
        "dtype": str(model.dtype).replace("torch.", ""),
        "device": str(model.device),
        "config": _config_rows(model.hf.config),
        "module_tree": "\n".join(module_tree(model.hf)),
        "params": param_counts(model),
        "sites": site_table(model),
    }
