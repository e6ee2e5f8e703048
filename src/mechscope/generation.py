"""What `mechscope generate` does: continue a prompt (greedy or sampled, optionally through the chat template)."""
from __future__ import annotations

import copy
from typing import Optional

import torch

from .errors import ConfigError, MechscopeError
from .tokens import require_text


def chat_prompt(model, prompt: str) -> str:
    """`prompt` as one user turn in the tokenizer's chat template, ready for the assistant's answer."""
    if not getattr(model.tokenizer, "chat_template", None):
        raise ConfigError(
            f"chat=True: the tokenizer of {model.name} has no chat template, so there is no chat format to apply. "
            "Drop --chat to continue the raw prompt, or use an instruction-tuned model (the default model has one).",
            "chat")
    return model.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                               add_generation_prompt=True)


def check_settings(max_new_tokens: int = 32, greedy: Optional[bool] = None, temperature: Optional[float] = None,
                   top_p: Optional[float] = None) -> bool:
    """Every check of `generate`'s settings that needs no model; returns whether it samples."""
    if int(max_new_tokens) < 1:
        raise ConfigError(f"max_new_tokens={max_new_tokens} must be at least 1.", "max_new_tokens")
    if greedy and (temperature is not None or top_p is not None):
        raise ConfigError("greedy cannot be combined with temperature or top_p: greedy decoding always picks the "
                          "most likely token. Drop --greedy to sample.", "greedy")
    if temperature is not None and not temperature > 0:
        raise ConfigError(f"temperature={temperature} must be > 0 (use --greedy for deterministic decoding).",
                          "temperature")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"top_p={top_p} must be in (0, 1].", "top_p")
    return bool((temperature is not None or top_p is not None) and not greedy)


def _generation_config(model, max_new_tokens: int, do_sample: bool, temperature, top_p):
    gc = copy.deepcopy(model.hf.generation_config)
    gc.max_new_tokens, gc.do_sample, gc.num_beams = int(max_new_tokens), do_sample, 1
    gc.temperature = float(temperature) if do_sample and temperature is not None else 1.0
    gc.top_p = float(top_p) if do_sample and top_p is not None else 1.0
    gc.top_k = 0 if do_sample else None  # sample from the full (top-p filtered) distribution
    if gc.pad_token_id is None:
        gc.pad_token_id = model.tokenizer.pad_token_id
    return gc


def generate(model, prompt: str, max_new_tokens: int = 32, *, greedy: Optional[bool] = None,
             temperature: Optional[float] = None, top_p: Optional[float] = None, seed: Optional[int] = None,
             chat: bool = False) -> dict:
    """Continue `prompt` with `model.hf.generate`.

    Greedy by default. Giving temperature, top_p or seed (and not greedy=True) samples instead; the seed makes
    sampling reproducible (the global RNG state is left untouched). chat=True wraps the prompt in the chat template.
    Returns {prompt, input_text, completion, prompt_token_ids, completion_token_ids, settings}.
    """
    require_text("prompt", prompt, blank_ok=True)
    do_sample = check_settings(max_new_tokens, greedy, temperature, top_p) or (seed is not None and not greedy)
    model.require_lm_head("generate")
    if not model.adapter.causal:
        raise MechscopeError(f"generate: {model.name} is an encoder ({model.cfg.family}), not a causal language "
                             "model; it cannot continue text. Use a decoder model (gpt2, llama, ...).", "model")
    text = chat_prompt(model, prompt) if chat else prompt
    ids = model.tokenizer(text, add_special_tokens=not chat)["input_ids"]  # the template already holds specials
    batch = model.batch([ids])  # validates length against n_ctx; (1, T)
    n_ctx = model.cfg.n_ctx
    if n_ctx and len(ids) + max_new_tokens > n_ctx:
        raise ConfigError(f"The prompt ({len(ids)} tokens) plus max_new_tokens={max_new_tokens} exceeds the "
                          f"model's context of {n_ctx} tokens. Lower --max-new-tokens or shorten the prompt.",
                          "max_new_tokens")
    gc = _generation_config(model, max_new_tokens, do_sample, temperature, top_p)
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
