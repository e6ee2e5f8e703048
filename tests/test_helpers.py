"""The shared leaf helpers (devices, tokens, fsio, jsonsafe, htmlkit, indices): one copy each, used everywhere."""
from __future__ import annotations

import pytest
import torch

from mechscope import devices, loading
from mechscope.errors import ConfigError, MechscopeError


def test_loading_resolves_devices_and_dtypes_with_the_one_devices_module():
    assert loading.resolve_device is devices.resolve_device
    assert loading.resolve_dtype is devices.resolve_dtype
    assert loading.DTYPES is devices.DTYPES


def test_device_errors_name_the_argument_and_the_flag():
    with pytest.raises(ConfigError) as e:
        devices.resolve_device("tpu")
    assert "device='tpu'" in str(e.value) and "--device" in str(e.value) and e.value.argument == "device"
    with pytest.raises(MechscopeError, match="store_dtype='fp8'.*--store-dtype"):
        devices.resolve_dtype("fp8", torch.device("cpu"), argument="store_dtype")


def test_one_dtype_alias_table():
    from mechscope.extract import config

    assert config.DTYPE_ALIASES is devices.DTYPE_ALIASES
    assert devices.DTYPE_ALIASES == {"fp32": "float32", "float32": "float32", "fp16": "float16",
                                     "float16": "float16", "bf16": "bfloat16", "bfloat16": "bfloat16"}


def test_one_copy_of_the_token_helpers():
    from mechscope import generation, lens, next_token, tokenization, tokens
    from mechscope.cli import common

    assert common.show_token is tokens.show_token and common.require_text is tokens.require_text
    for module in (generation, next_token, tokenization):
        assert module.require_text is tokens.require_text
    assert lens.tokens is tokens  # lens.single_token_id is a wrapper over tokens.single_token_id


def test_require_text():
    from mechscope.tokens import require_text

    assert require_text("prompt", " ", blank_ok=True) == " "
    for bad in ("", None, " \n"):
        with pytest.raises(MechscopeError, match="prompt is empty") as e:
            require_text("prompt", bad)
        assert e.value.argument == "prompt"
    with pytest.raises(MechscopeError, match="prompt must be text, not int"):
        require_text("prompt", 3)


class WordTokenizer:
    """A tokenizer of whole known words, else one token per character (enough to test the one-token rules)."""
    vocab = {"Paris": 5, " Paris": 7, "a": 1, "b": 2, " ": 3, "R": 8, "o": 9, "m": 10, "e": 11, " Rome": 12}

    def __call__(self, text, add_special_tokens=False):
        ids = [self.vocab[text]] if text in self.vocab else [self.vocab.get(c, 0) for c in text]
        return {"input_ids": ids}

    def decode(self, ids):
        inv = {v: k for k, v in self.vocab.items()}
        return "".join(inv.get(i, "?") for i in ids)


def test_single_token_without_its_leading_space_warns_with_the_spaced_id():
    """Issue 10 item 10: 'Paris' is one token, but after a word the model predicts ' Paris': say so."""
    from mechscope.tokens import single_token_id

    with pytest.warns(UserWarning, match=r"target 'Paris' \(id 5\) has no leading space.*' Paris' \(id 7\)"):
        assert single_token_id(WordTokenizer(), "Paris", "target") == 5


def test_lens_target_errors_name_the_pieces_and_the_fix():
    """lens.single_token_id is tokens.single_token_id: the pieces, the ids and the spaced variant with its flag."""
    from mechscope.lens import single_token_id

    class M:
        tokenizer = WordTokenizer()

        class cfg:
            d_vocab = 20

    with pytest.raises(MechscopeError, match=r"'ab' is not a single token: it is 2 tokens .*'a' \+ 'b'; ids 1, 2") as e:
        single_token_id(M, "ab")
    assert e.value.argument == "target"
    with pytest.raises(MechscopeError, match=r"' Rome', is a single token \(id 12\): use that \(--target ' Rome'\)"):
        single_token_id(M, "Rome")
