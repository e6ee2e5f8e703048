"""Tiny randomly initialised models of every supported family, built offline from their HF configs.

Used by the tests (and handy for trying things out): `tiny_model("phi3")` returns a `mechscope.Model` whose weights
come from a fixed seed and whose tokenizer is a character-level one built here, so nothing is downloaded.
"""
from __future__ import annotations

import string

import torch

from .model import Model

FAMILIES = ("gpt2", "llama", "mistral", "qwen2", "phi3", "gpt_neox", "gpt_neox_seq", "bert")
_SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "[CLS]", "[SEP]", "[MASK]"]


def char_tokenizer(bos: bool = True, bert: bool = False):
    """A character-level fast tokenizer (~100 symbols) with pad/unk/bos/eos."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(_SPECIALS + list(string.printable[:95]))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    if bert:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    elif bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", mask_token="[MASK]", cls_token="[CLS]", sep_token="[SEP]")
    return fast


def tiny_config(family: str, vocab_size: int = 128):
    """An HF config for a 2-4 layer model of `family` (see FAMILIES)."""
    import transformers as tf

    common = dict(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                  intermediate_size=96, max_position_embeddings=128)
    if family == "gpt2":
        return tf.GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=3, n_head=4, n_positions=128, n_inner=96,
                             bos_token_id=2, eos_token_id=3)
    if family in ("llama", "mistral", "qwen2"):
        cls = {"llama": tf.LlamaConfig, "mistral": tf.MistralConfig, "qwen2": tf.Qwen2Config}[family]
        return cls(num_key_value_heads=2, tie_word_embeddings=False, bos_token_id=2, eos_token_id=3, pad_token_id=0,
                   **common)
    if family == "phi3":
        return tf.Phi3Config(num_key_value_heads=2, bos_token_id=2, eos_token_id=3, pad_token_id=0, **common)
    if family in ("gpt_neox", "gpt_neox_seq"):
        return tf.GPTNeoXConfig(use_parallel_residual=family == "gpt_neox", rotary_pct=0.5, bos_token_id=2,
                                eos_token_id=3, **common)
    if family == "bert":
        return tf.BertConfig(type_vocab_size=2, pad_token_id=0, **common)
    raise ValueError(f"unknown tiny family {family!r}; choose from {FAMILIES}")


def tiny_hf(family: str, seed: int = 0):
    """(hf_model, tokenizer) for a tiny random model of `family`."""
    import transformers as tf

    cfg = tiny_config(family)
    torch.manual_seed(seed)
    auto = tf.AutoModelForMaskedLM if family == "bert" else tf.AutoModelForCausalLM
    hf = auto.from_config(cfg, attn_implementation="sdpa").eval()
    with torch.no_grad():  # a larger init than HF's 0.02 so that layers do visible work
        for p in hf.parameters():
            if p.ndim >= 2:
                p.normal_(0, 0.15)
    return hf, char_tokenizer(bert=family == "bert", bos=family != "gpt2")


def tiny_model(family: str, seed: int = 0) -> Model:
    hf, tok = tiny_hf(family, seed)
    return Model(hf, tok, name=f"tiny-{family}")
