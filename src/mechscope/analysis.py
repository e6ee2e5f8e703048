"""The foundation's analyses as plain Python: describe a model, tokenize, generate, rank the next token.

Each function here backs one CLI command (`mechscope inspect | tokenize | generate | next-token`) and returns plain
data (dicts and lists of dicts) that the command prints as a table or as JSON. The logit lens lives in `lens.py`.
"""
from __future__ import annotations

import copy
import re
from typing import Optional

import torch

from .errors import MechscopeError
from .sites import BLOCK_SITES, SITE_DOC, available_kinds
from .tokens import require_text

# ---- describe (mechscope inspect) --------------------------------------------------------------------------------

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


# ---- tokenize ------------------------------------------------------------------------------------------------------

def tokenize_table(model, text: str) -> list[dict]:
    """One row per token the model sees for `text` (special tokens such as BOS included): index, id, text piece."""
    ids = model.tokenizer(require_text("text", text, blank_ok=True))["input_ids"]
    raw = model.tokenizer.convert_ids_to_tokens(ids)
    return [{"index": i, "id": int(t), "text": model.tokenizer.decode([int(t)]), "token": r}
            for i, (t, r) in enumerate(zip(ids, raw))]


# ---- generate ------------------------------------------------------------------------------------------------------

def chat_prompt(model, prompt: str) -> str:
    """`prompt` as one user turn in the tokenizer's chat template, ready for the assistant's answer."""
    if not getattr(model.tokenizer, "chat_template", None):
        raise MechscopeError(
            f"--chat: the tokenizer of {model.name} has no chat template, so there is no chat format to apply. Drop "
            "--chat to continue the raw prompt, or use an instruction-tuned model (the default model has one)."
        )
    return model.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                               add_generation_prompt=True)


def generate(model, prompt: str, max_new_tokens: int = 32, *, greedy: Optional[bool] = None,
             temperature: Optional[float] = None, top_p: Optional[float] = None, seed: Optional[int] = None,
             chat: bool = False) -> dict:
    """Continue `prompt` with `model.hf.generate`.

    Greedy by default. Giving temperature, top_p or seed (and not greedy=True) samples instead; the seed makes
    sampling reproducible (the global RNG state is left untouched). chat=True wraps the prompt in the chat template.
    Returns {prompt, input_text, completion, prompt_token_ids, completion_token_ids, settings}.
    """
    require_text("prompt", prompt, blank_ok=True)
    model.require_lm_head("generate")
    if not model.adapter.causal:
        raise MechscopeError(f"generate: {model.name} is an encoder ({model.cfg.family}), not a causal language "
                             "model; it cannot continue text. Use a decoder model (gpt2, llama, ...).")
    if int(max_new_tokens) < 1:
        raise MechscopeError(f"--max-new-tokens {max_new_tokens} must be at least 1.")
    sampling_args = temperature is not None or top_p is not None or seed is not None
    if greedy and (temperature is not None or top_p is not None):
        raise MechscopeError("--greedy cannot be combined with --temperature or --top-p: greedy decoding always picks "
                             "the most likely token. Drop --greedy to sample.")
    do_sample = bool(sampling_args and not greedy)
    if temperature is not None and not temperature > 0:
        raise MechscopeError(f"--temperature {temperature} must be > 0 (use --greedy for deterministic decoding).")
    if top_p is not None and not 0 < top_p <= 1:
        raise MechscopeError(f"--top-p {top_p} must be in (0, 1].")
    text = chat_prompt(model, prompt) if chat else prompt
    ids = model.tokenizer(text, add_special_tokens=not chat)["input_ids"]  # the template already holds specials
    batch = model.batch([ids])  # validates length against n_ctx; (1, T)
    n_ctx = model.cfg.n_ctx
    if n_ctx and len(ids) + max_new_tokens > n_ctx:
        raise MechscopeError(f"The prompt ({len(ids)} tokens) plus --max-new-tokens {max_new_tokens} exceeds the "
                             f"model's context of {n_ctx} tokens. Lower --max-new-tokens or shorten the prompt.")
    gc = copy.deepcopy(model.hf.generation_config)
    gc.max_new_tokens, gc.do_sample, gc.num_beams = int(max_new_tokens), do_sample, 1
    gc.temperature = float(temperature) if do_sample and temperature is not None else 1.0
    gc.top_p = float(top_p) if do_sample and top_p is not None else 1.0
    gc.top_k = 0 if do_sample else None  # sample from the full (top-p filtered) distribution
    if gc.pad_token_id is None:
        gc.pad_token_id = model.tokenizer.pad_token_id
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        if seed is not None:
            torch.manual_seed(int(seed))
        out = model.hf.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask.long(),
                                generation_config=gc)
    new = out[0, len(ids):].tolist()  # (T_new,)
    return {
        "prompt": prompt,
        "input_text": text,
        "completion": model.tokenizer.decode(new, skip_special_tokens=True),
        "prompt_token_ids": [int(i) for i in ids],
        "completion_token_ids": [int(i) for i in new],
        "settings": {"max_new_tokens": int(max_new_tokens), "do_sample": do_sample,
                     "temperature": gc.temperature if do_sample else None,
                     "top_p": gc.top_p if do_sample else None, "seed": seed, "chat": bool(chat)},
    }


# ---- next token ----------------------------------------------------------------------------------------------------

def next_token_table(model, prompt: str, top_k: int = 20) -> list[dict]:
    """The top-k next tokens after `prompt`: rows {position (rank, 1 = most likely), token_index (id), token,
    probability, logit}, from one forward pass."""
    require_text("prompt", prompt, blank_ok=True)
    model.require_lm_head("next-token")
    if not model.adapter.causal:
        raise MechscopeError(f"next-token: {model.name} is an encoder ({model.cfg.family}); it does not predict a "
                             "next token. Use a decoder model (gpt2, llama, ...).")
    logits, _ = model.run(prompt)  # (1, T, V)
    last = logits[0, -1].float()  # (V,)
    if not 1 <= int(top_k) <= last.shape[-1]:
        raise MechscopeError(f"--top-k {top_k} must be between 1 and the vocabulary size {last.shape[-1]}.")
    probs = torch.softmax(last, dim=-1)  # (V,)
    top = torch.topk(probs, int(top_k))
    return [{"position": rank + 1, "token_index": int(i), "token": model.tokenizer.decode([int(i)]),
             "probability": float(p), "logit": float(last[i])}
            for rank, (p, i) in enumerate(zip(top.values.tolist(), top.indices.tolist()))]
