import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

CAUSAL = ("gpt2", "llama", "mistral", "qwen2", "phi3", "gpt_neox", "gpt_neox_seq")
ALL_FAMILIES = CAUSAL + ("bert",)


@pytest.fixture(scope="session")
def default_model():
    """The embedded SmolLM2-135M-Instruct (converted once into MECHSCOPE_CACHE or ~/.cache/mechscope)."""
    import mechscope
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return mechscope.load()


_tiny = {}


def tiny(family: str):
    """Session-cached tiny random model of a family."""
    from mechscope.tiny import tiny_model

    if family not in _tiny:
        _tiny[family] = tiny_model(family)
    return _tiny[family]
