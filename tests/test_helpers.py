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
