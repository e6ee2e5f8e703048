"""The sparse autoencoder: TopK, BatchTopK and ReLU (L1) architectures, one module.

Conventions (the same as SAELens, so export is a renaming):

    x_s   = x * input_scale                       inputs scaled so that their mean norm is sqrt(d_in)
    pre   = (x_s - b_dec) @ W_enc + b_enc         W_enc (d_in, d_sae)
    acts  = act_fn(pre)                           topk / batchtopk / relu / jumprelu, always >= 0
    x_hat = (acts @ W_dec + b_dec) / input_scale  W_dec (d_sae, d_in): one unit-norm row per latent

`encode` and `decode` take and return activations in the model's own units; the scale is internal.
BatchTopK keeps the k * batch largest activations of a batch while training and learns a threshold (an exponential
moving average of the smallest activation it kept); at inference it is a JumpReLU with that threshold.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .. import fsio
from ..errors import DataError, MechscopeError

ARCHS = ("topk", "batchtopk", "relu", "jumprelu")
WEIGHTS_FILE = "sae.safetensors"
CONFIG_FILE = "config.json"


@dataclass
class SAEConfig:
    d_in: int
    d_sae: int
    arch: str = "topk"
    k: Optional[int] = 32
    input_scale: float = 1.0
    site: Optional[str] = None
    model: Optional[str] = None
    extra: dict = field(default_factory=dict)  # training config, provenance: written as-is to config.json

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise MechscopeError(f"Unknown SAE architecture {self.arch!r}. Choose one of: {', '.join(ARCHS[:3])}.")
        if self.arch in ("topk", "batchtopk") and (self.k is None or not 0 < self.k <= self.d_sae):
            raise MechscopeError(f"k={self.k} is not valid for {self.arch} with {self.d_sae} latents: "
                                 f"use 1 <= k <= {self.d_sae}.")


class SAE(nn.Module):
    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        d, m = cfg.d_in, cfg.d_sae
        self.W_enc = nn.Parameter(torch.zeros(d, m))
        self.W_dec = nn.Parameter(torch.zeros(m, d))
        self.b_enc = nn.Parameter(torch.zeros(m))
        self.b_dec = nn.Parameter(torch.zeros(d))
        # inference threshold (scaled units): BatchTopK's learned scalar, JumpReLU's per-latent values
        self.register_buffer("threshold", torch.zeros(m))

    # ---- construction --------------------------------------------------------------------------------------------
    @classmethod
    def init(cls, cfg: SAEConfig, generator: Optional[torch.Generator] = None,
             data_mean: Optional[torch.Tensor] = None, enc_scale: float = 0.1) -> "SAE":
        """Random unit-norm decoder rows, encoder = `enc_scale` x decoder transposed, b_enc = 0, b_dec = data mean
        (scaled).

        The small encoder (columns of norm 0.1, like SAELens's W_enc with its decoder_init_norm=0.1) makes
        Adam's fixed-size steps large relative to the encoder weights early on; with unit-norm columns a 232-step run
        (1M tokens) ended at held-out FVU 0.178 instead of 0.163 at lr 1e-3 (benchmarks/RESULTS.md, SAE)."""
        sae = cls(cfg)
        with torch.no_grad():
            w = torch.randn(cfg.d_sae, cfg.d_in, generator=generator)
            w /= w.norm(dim=-1, keepdim=True)
            sae.W_dec.copy_(w)
            sae.W_enc.copy_(w.T * enc_scale)
            if data_mean is not None:
                sae.b_dec.copy_(data_mean)
        return sae

    @classmethod
    def identity(cls, d: int) -> "SAE":
        """An exact identity 'SAE' (ReLU, 2d latents: relu(x) - relu(-x) = x). Used to test the splice."""
        sae = cls(SAEConfig(d_in=d, d_sae=2 * d, arch="relu", k=None))
        eye = torch.eye(d)
        with torch.no_grad():
            sae.W_enc.copy_(torch.cat([eye, -eye], 1))
            sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        return sae

    # ---- forward -------------------------------------------------------------------------------------------------
    def pre_acts(self, x_scaled: torch.Tensor) -> torch.Tensor:
        return (x_scaled - self.b_dec) @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor, training: bool = False) -> torch.Tensor:
        arch = self.cfg.arch
        if arch == "relu":
            return torch.relu(pre)
        if arch == "topk" or (arch == "batchtopk" and not training):
            if arch == "batchtopk":
                return pre * (pre > self.threshold)
            vals, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter_(-1, idx, vals.relu())
        if arch == "batchtopk":  # training: the k * batch largest over the whole batch
            flat = pre.relu().flatten()
            n = min(self.cfg.k * pre.shape[0], flat.numel())
            vals, idx = flat.topk(n, sorted=False)
            return torch.zeros_like(flat).scatter_(0, idx, vals).view_as(pre)
        return torch.relu(pre) * (pre > self.threshold)  # jumprelu

    def encode_scaled(self, x_scaled: torch.Tensor) -> torch.Tensor:
        return self.activate(self.pre_acts(x_scaled))

    def decode_scaled(self, acts: torch.Tensor) -> torch.Tensor:
        return acts @ self.W_dec + self.b_dec

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent activations (..., d_sae) of inputs in model units (..., d_in)."""
        return self.encode_scaled(x.to(self.W_enc.dtype) * self.cfg.input_scale)

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        """Reconstruction in model units."""
        return self.decode_scaled(acts) / self.cfg.input_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of x (any leading shape), returned in x's dtype: what the splice test patches in."""
        return self.decode(self.encode(x)).to(x.dtype)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp(min=1e-8))

    # ---- files ---------------------------------------------------------------------------------------------------
    def config_dict(self) -> dict:
        return asdict(self.cfg)

    def save(self, folder) -> Path:
        """Write sae.safetensors and config.json (the resolved config) into `folder`."""
        from safetensors.torch import save

        folder = Path(folder)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        fsio.write_bytes(folder / WEIGHTS_FILE, save(tensors, metadata={"format": "mechscope-sae"}))
        fsio.write_json(folder / CONFIG_FILE, json.loads(json.dumps(self.config_dict(), default=str)))
        return folder

    @classmethod
    def load(cls, folder, device="cpu") -> "SAE":
        """Load a SAE written by `save` (or by `mechscope sae train`)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / WEIGHTS_FILE).exists() or not (folder / CONFIG_FILE).exists():
            if (folder / "cfg.json").exists():
                raise MechscopeError(f"{folder} holds a SAELens SAE, not a mechscope one. Convert it first: "
                                     f"mechscope sae import {folder} --out DIR.")
            raise MechscopeError(f"No SAE in {folder}: expected {WEIGHTS_FILE} and {CONFIG_FILE} "
                                 "(written by `mechscope sae train`).")
        try:
            raw = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise DataError(f"{folder / CONFIG_FILE} is not valid JSON ({err}): the SAE folder is damaged. Retrain, "
                            "or copy the folder again.", "sae") from None
        known = {f for f in SAEConfig.__dataclass_fields__}
        cfg = SAEConfig(**{k: v for k, v in raw.items() if k in known})
        sae = cls(cfg)
        try:
            weights = load_file(str(folder / WEIGHTS_FILE))
        except Exception as err:  # safetensors raises its own error type for a truncated or corrupt header
            size = (folder / WEIGHTS_FILE).stat().st_size
            raise DataError(f"{folder / WEIGHTS_FILE} ({size:,} bytes) is truncated or corrupt ({err}); a "
                            "half-finished copy or download is the usual cause. Nothing was read or written. Copy "
                            "the SAE folder again, or retrain it with `mechscope sae train`.", "sae") from None
        try:
            sae.load_state_dict(weights)
        except RuntimeError as err:
            raise DataError(f"{folder / WEIGHTS_FILE} does not match its {CONFIG_FILE} ({str(err).splitlines()[0]})."
                            " Copy the SAE folder again, or retrain it.", "sae") from None
        return sae.to(device).eval()


def load(folder, device="cpu") -> SAE:
    """`mechscope.sae.load(folder)`: the SAE that `mechscope sae train` (or `SAE.save`, `sae import`) wrote there."""
    return SAE.load(folder, device=device)
