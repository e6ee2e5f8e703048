"""Devices and dtypes: the one place that turns 'auto', 'cuda:1', 'bf16' ... into torch objects."""
from __future__ import annotations

from typing import Union

import torch

from .errors import ConfigError, ResourceError, flag_name

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
# Every accepted spelling -> the long name (what manifests and configs record).
DTYPE_ALIASES = {alias: DTYPE_NAMES[dt] for alias, dt in DTYPES.items()}


def _named(argument: str, value) -> str:
    """`device='tpu' (--device)`: the Python argument and value, with the CLI flag that sets it."""
    return f"{argument}={value!r} ({flag_name(argument)})"


def _mps() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(device: Union[str, torch.device, None] = "auto", argument: str = "device") -> torch.device:
    """'auto' (CUDA, else MPS, else CPU), 'cpu', 'cuda', 'cuda:N' or 'mps' -> torch.device; a clear error otherwise."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{_named(argument, device)} is not a device. Use cpu, cuda, cuda:N, mps or auto.",
                          argument) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ResourceError(f"{_named(argument, device)} asks for CUDA, but this PyTorch sees no CUDA GPU. Use cpu.",
                            argument)
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ResourceError(f"{_named(argument, device)}: only {torch.cuda.device_count()} CUDA device(s) are visible.",
                            argument)
    if dev.type == "mps" and not _mps():
        raise ResourceError(f"{_named(argument, device)} asks for Apple MPS, which is not available here. Use cpu.",
                            argument)
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{_named(argument, device)} is not supported. Use cpu, cuda, cuda:N, mps or auto.", argument)
    return dev


def resolve_dtype(dtype: Union[str, torch.dtype, None], device: torch.device, argument: str = "dtype") -> torch.dtype:
    """'auto' (bf16 on a GPU that supports it, else fp32), fp32/fp16/bf16 (or their long names) -> torch.dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"{_named(argument, dtype)} is not valid. Use fp32, fp16, bf16 or auto.", argument)
    return DTYPES[dtype]


def dtype_name(dtype: Union[str, torch.dtype]) -> str:
    """'float32', 'float16' or 'bfloat16' for a torch dtype or any alias."""
    if isinstance(dtype, str):
        dtype = DTYPES.get(dtype, dtype)
    if dtype not in DTYPE_NAMES:
        raise ConfigError(f"dtype {dtype!r} is not one of fp32, fp16, bf16.", "dtype")
    return DTYPE_NAMES[dtype]
