"""SAELens on-disk format: export and import.

A SAELens SAE folder holds `cfg.json` and `sae_weights.safetensors` with tensors W_enc (d_in, d_sae),
W_dec (d_sae, d_in), b_enc (d_sae), b_dec (d_in) and, for JumpReLU, threshold (d_sae). Its forward is
acts = act((x - b_dec) @ W_enc + b_enc), x_hat = acts @ W_dec + b_dec (b_dec subtracted from the input when
`apply_b_dec_to_input`, true by default). The hook is named in `metadata.hook_name` (SAELens >= 6; top-level
`hook_name` or `hook_point` before) with TransformerLens names, which are mechscope's site names.

Export folds mechscope's input scale s into the weights so that SAELens needs no normalisation
(`normalize_activations: "none"`) and the decoder rows stay unit-norm: the latent activations are divided by s
(b_enc / s, b_dec / s, threshold / s; W_enc and W_dec unchanged). TopK selection is unchanged by a positive
factor, so the exported SAE computes exactly the same reconstruction. TopK exports as `topk`, ReLU as `standard`,
BatchTopK as `jumprelu` with its learned threshold on every latent (what SAELens does with its own BatchTopK SAEs).
The scale is kept in `metadata.mechscope` so that importing our own export restores the original weights.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from .. import fsio
from ..errors import MechscopeError
from .model import SAE, SAEConfig

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SAELENS_VERSION = "6.0.0"
_EXPORT_ARCH = {"topk": "topk", "relu": "standard", "batchtopk": "jumprelu", "jumprelu": "jumprelu"}


def _as_sae(sae_or_dir) -> SAE:
    return sae_or_dir if isinstance(sae_or_dir, SAE) else SAE.load(sae_or_dir)


def export_saelens(sae_or_dir, out, *, model_name: Optional[str] = None, hook_name: Optional[str] = None) -> Path:
    """Write `sae` (a SAE or a mechscope SAE folder) to `out` in SAELens's format. Returns the folder."""
    from safetensors.torch import save

    sae = _as_sae(sae_or_dir)
    c = sae.cfg
    hook = hook_name or c.site
    if not hook:
        raise MechscopeError("This SAE does not record its site: pass hook_name= (--hook-name) with the "
                             "TransformerLens hook name, e.g. blocks.8.hook_mlp_out.")
    if hook.startswith("module:"):
        raise MechscopeError(f"Site {hook!r} is a raw module path with no TransformerLens hook name; SAELens "
                             "cannot hook it. Train on a named site (blocks.L.hook_...) to export.")
    s = float(c.input_scale)
    with torch.no_grad():
        t = {"W_enc": sae.W_enc.detach().float().cpu().clone(), "W_dec": sae.W_dec.detach().float().cpu().clone(),
             "b_enc": (sae.b_enc.detach().float().cpu() / s), "b_dec": (sae.b_dec.detach().float().cpu() / s)}
        if c.arch in ("batchtopk", "jumprelu"):
            thr = sae.threshold.detach().float().cpu() / s
            t["threshold"] = thr.expand(c.d_sae).clone() if thr.numel() == 1 else thr.clone()
    arch = _EXPORT_ARCH[c.arch]
    train = c.extra.get("train", {}) if isinstance(c.extra, dict) else {}
    cfg = {
        "architecture": arch,
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "hook_z" if hook.endswith("hook_z") else "none",
        "metadata": {
            "sae_lens_version": SAELENS_VERSION,
            "sae_lens_training_version": None,
            "model_name": model_name or c.model,
            "hook_name": hook,
            "hook_head_index": None,
            "prepend_bos": True,
            "context_size": None,
            "dataset_path": (c.extra.get("data") or {}).get("path") if isinstance(c.extra, dict) else None,
            "mechscope": {"arch": c.arch, "input_scale": s, "k": c.k, "train": train},
        },
    }
    if arch == "topk":
        cfg["k"] = int(c.k)
        cfg["rescale_acts_by_decoder_norm"] = False
    out = Path(out)
    fsio.write_bytes(out / WEIGHTS_FILE, save({k: v.contiguous() for k, v in t.items()}))
    fsio.write_json(out / CFG_FILE, json.loads(json.dumps(cfg, default=str)))
    return out


def import_saelens(folder, out=None, *, site: Optional[str] = None) -> SAE:
    """Read a SAELens SAE folder (cfg.json + sae_weights.safetensors) as a mechscope SAE; save it to `out` if given.

    Supported architectures: standard (ReLU), topk (with or without rescale_acts_by_decoder_norm, folded in), jumprelu
    (and BatchTopK SAEs, which SAELens saves as jumprelu).
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / CFG_FILE).exists() or not (folder / WEIGHTS_FILE).exists():
        raise MechscopeError(f"No SAELens SAE in {folder}: expected {CFG_FILE} and {WEIGHTS_FILE}.")
    cfg = json.loads((folder / CFG_FILE).read_text())
    meta = cfg.get("metadata") or {}
    hook = site or meta.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point")
    arch = cfg.get("architecture") or "standard"
    if arch == "standard" and (cfg.get("activation_fn") or cfg.get("activation_fn_str")) == "topk":
        arch = "topk"  # pre-6 configs
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    ours = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "jump_relu": "jumprelu"}.get(arch)
    if ours is None:
        raise MechscopeError(f"SAELens architecture {arch!r} is not supported here; mechscope reads standard, topk "
                             "and jumprelu SAEs.")
    norm = cfg.get("normalize_activations", "none")
    if norm not in (None, False, "none", "expected_average_only_in"):
        raise MechscopeError(f"This SAE normalises its inputs with {norm!r} at run time, which mechscope does not "
                             "implement; only 'none' (and folded 'expected_average_only_in') SAEs can be imported.")
    w = {k2: v.float() for k2, v in load_file(str(folder / WEIGHTS_FILE)).items()}
    missing = [n for n in ("W_enc", "W_dec", "b_enc", "b_dec") if n not in w]
    if missing:
        raise MechscopeError(f"{folder / WEIGHTS_FILE} lacks {', '.join(missing)} (SAELens key names).")
    d_in, d_sae = w["W_enc"].shape
    if cfg.get("apply_b_dec_to_input", True) is False:  # fold: x @ W_enc = (x - b_dec) @ W_enc + b_dec @ W_enc
        w["b_enc"] = w["b_enc"] + w["b_dec"] @ w["W_enc"]
    if cfg.get("rescale_acts_by_decoder_norm"):  # latents ranked by act x ||W_dec row||: fold the norms in
        n = w["W_dec"].norm(dim=-1).clamp(min=1e-8)
        w["W_enc"], w["b_enc"], w["W_dec"] = w["W_enc"] * n, w["b_enc"] * n, w["W_dec"] / n[:, None]
    sf = w.pop("scaling_factor", None)
    if sf is not None and not torch.allclose(sf, torch.ones_like(sf)):
        w["W_dec"] = w["W_dec"] * sf[:, None]
    mech = meta.get("mechscope") or {}
    s, ours_arch, thr = 1.0, ours, w.get("threshold")
    if mech.get("input_scale") is not None and mech.get("arch") in ("topk", "relu", "batchtopk"):
        s = float(mech["input_scale"])  # our own export: undo the fold exactly
        ours_arch = mech["arch"]
        k = mech.get("k", k)
    sae = SAE(SAEConfig(d_in=int(d_in), d_sae=int(d_sae), arch=ours_arch, k=int(k) if k else None, input_scale=s,
                        site=hook, model=meta.get("model_name") or cfg.get("model_name"),
                        extra={"imported_from": {"format": "saelens", "path": str(folder), "architecture": arch},
                               **({"train": mech["train"]} if mech.get("train") else {})}))
    with torch.no_grad():
        sae.W_enc.copy_(w["W_enc"])
        sae.W_dec.copy_(w["W_dec"])
        sae.b_enc.copy_(w["b_enc"] * s)
        sae.b_dec.copy_(w["b_dec"] * s)
        if thr is not None:
            t = thr * s
            sae.threshold.copy_(t[0].expand(d_sae) if ours_arch == "batchtopk" else t)
    if out is not None:
        sae.save(out)
    return sae.eval()
