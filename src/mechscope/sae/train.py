"""Training a SAE on one site of an activation dataset (`mechscope sae train`, `mechscope.sae.train`).

What it does, in order: hold out the last ~5% of rows (at a document boundary) for evaluation; estimate from a
sample of training rows the input scale that gives a mean norm of sqrt(d_in) (stored with the SAE) and the data mean
(the initial decoder bias); then Adam (the decoder's lr `dec_lr_mult` = 3 times the others) on shuffled batches
with a linear LR warm-up (and a linear decay over the last 20% of steps), for ReLU a linear warm-up of the L1
coefficient (`l1_warmup_steps`, default 20% of steps), decoder rows projected and renormalised
to unit norm after every step, and the auxiliary loss of Gao et al. (2024): the residual x - x_hat is reconstructed
from the top `aux_k` pre-activations of the latents that have been dead (not active) for `dead_tokens` tokens,
weighted by `aux_coef`. Checkpoints are written atomically every `checkpoint_every` steps; `resume=True`
continues from the last one and ends with exactly the weights an uninterrupted run with the same seed gives (the
data order is a function of the step, not of the history).
"""
from __future__ import annotations

import json
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .. import fsio
from ..errors import ConfigError, DataError, MechscopeError
from ..jsonsafe import json_safe
from . import sparse
from .data import RowStream, check_site, manifest_model, open_dataset, probe, sample_rows, split_rows
from ..devices import resolve_device
from .model import CONFIG_FILE, WEIGHTS_FILE, SAE, SAEConfig

CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "train_log.jsonl"
# Default L1 warm-up (ReLU) as a fraction of the steps: the L1 coefficient rises linearly from ~0 to `l1` over it.
# Without it the default l1 (5) kills most latents in the first steps, before the decoder has found the data's
# directions, and they never come back (known-dictionary data of tests/test_sae_core.py: mean best cosine 0.59,
# ~97% dead); see README (Training, ReLU) for the measurements behind this value.
L1_WARMUP_FRACTION = 0.2


@dataclass
class TrainConfig:
    """Every setting of a SAE training run: what `mechscope sae train` maps its flags onto, what `resume` compares
    (all fields but RUN_ONLY) and what config.json records (resolved: defaults filled in, under extra.train)."""
    site: Optional[str] = None           # None: the dataset's only site
    arch: str = "topk"
    k: int = 32
    expansion: int = 16
    d_sae: Optional[int] = None          # overrides expansion
    l1: float = 5.0                      # ReLU only: loss = ||x - x_hat||^2 + l1 * sum(acts)
    l1_warmup_steps: Optional[int] = None  # ReLU only: l1 ramps up linearly over it; None: 20% of steps
    lr: Optional[float] = None           # None: 2e-4 * sqrt(16384 / d_sae), clipped to [1e-4, 1e-3]
    batch_tokens: int = 4096
    tokens: Optional[int] = None         # None: one pass over the training rows
    seed: int = 0
    warmup_steps: Optional[int] = None   # None: min(1000, 5% of steps)
    decay_fraction: float = 0.2
    aux_k: Optional[int] = None          # None: d_in // 2
    aux_coef: float = 1 / 32
    dec_lr_mult: float = 3.0             # the decoder's lr is lr * dec_lr_mult (see Trainer)
    dead_tokens: Optional[int] = None    # None: min(10M, total tokens // 5)
    threshold_lr: float = 0.01           # BatchTopK threshold EMA rate
    heldout_tokens: Optional[int] = None
    checkpoint_every: int = 500
    log_every: int = 20
    buffer_tokens: int = 1 << 18
    sparse: bool = True                  # TopK/BatchTopK: sparse kernels (sparse.py) instead of dense matmuls
    device: str = "auto"

    def check(self) -> None:
        """The checks that need neither the data nor a model (so they come first)."""
        if self.arch not in ("topk", "batchtopk", "relu"):
            raise ConfigError(f"--arch {self.arch!r} is not valid: use topk, batchtopk or relu.", "arch")
        for name in ("batch_tokens", "k", "expansion", "checkpoint_every", "log_every", "buffer_tokens"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive (got {v}).", name)
        for name in ("d_sae", "tokens", "warmup_steps", "aux_k", "dead_tokens", "heldout_tokens"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ConfigError(f"--{name.replace('_', '-')} must be positive (got {v}).", name)
        if self.l1_warmup_steps is not None and self.l1_warmup_steps < 0:
            raise ConfigError(f"--l1-warmup-steps must be >= 0 (got {self.l1_warmup_steps}); pass 0 for no "
                              "warm-up.", "l1_warmup_steps")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"--lr must be positive (got {self.lr}).", "lr")
        if not 0 <= self.decay_fraction <= 1:
            raise ConfigError(f"decay_fraction must be in [0, 1] (got {self.decay_fraction}).", "decay_fraction")


def _resolve(cfg: TrainConfig, d_in: int, n_train: int) -> dict:
    r = asdict(cfg)
    d_sae = cfg.d_sae or cfg.expansion * d_in
    tokens = cfg.tokens if cfg.tokens is not None else n_train
    steps = math.ceil(tokens / cfg.batch_tokens)
    r.update(
        d_in=d_in, d_sae=d_sae, tokens=steps * cfg.batch_tokens, steps=steps,
        lr=cfg.lr if cfg.lr is not None else float(min(1e-3, max(1e-4, 2e-4 * math.sqrt(16384 / d_sae)))),
        warmup_steps=cfg.warmup_steps if cfg.warmup_steps is not None else min(1000, max(1, steps // 20)),
        l1_warmup_steps=(cfg.l1_warmup_steps if cfg.l1_warmup_steps is not None
                         else int(steps * L1_WARMUP_FRACTION)),
        aux_k=min(cfg.aux_k or max(1, d_in // 2), d_sae),
        dead_tokens=cfg.dead_tokens or max(cfg.batch_tokens, min(10_000_000, steps * cfg.batch_tokens // 5)),
    )
    if cfg.arch == "relu":
        r["k"] = None
    else:
        r["l1_warmup_steps"] = None  # no L1 term: the warm-up means nothing (and is not checked on --resume)
    return r


def lr_at(step: int, r: dict) -> float:
    """Linear warm-up to lr over warmup_steps, constant, then linear decay to 0 over the last decay_fraction."""
    lr, steps = r["lr"], r["steps"]
    scale = min(1.0, (step + 1) / max(1, r["warmup_steps"]))
    decay_start = int(steps * (1 - r["decay_fraction"]))
    if r["decay_fraction"] > 0 and step >= decay_start:
        scale = min(scale, (steps - step) / max(1, steps - decay_start))
    return lr * scale


def l1_at(step: int, r: dict) -> float:
    """ReLU's L1 coefficient at `step`: linear warm-up to l1 over l1_warmup_steps (0: l1 from the first step)."""
    return r["l1"] * min(1.0, (step + 1) / max(1, r.get("l1_warmup_steps") or 0))


class Trainer:
    """One training run. `step()` is one optimizer step; `run()` the whole loop with checkpoints."""

    def __init__(self, sae: SAE, r: dict, stream: RowStream, device):
        self.sae, self.r, self.stream, self.device = sae.to(device), r, stream, device
        kw = {"fused": True} if device.type == "cuda" else {}
        # The decoder rows are unit-norm: Adam's steps of ~lr per weight turn them slowly next to SAELens's free
        # decoder (initialised at norm 0.1, so the same steps turn its directions ~10x faster). dec_lr_mult
        # speeds up the decoder's lr alone to make up for it: 3 (the default) beat 1 and 10 on the 1M-token
        # benchmark (benchmarks/RESULTS.md, SAE).
        groups = [{"params": [p for n, p in self.sae.named_parameters() if n != "W_dec"], "lr_mult": 1.0},
                  {"params": [self.sae.W_dec], "lr_mult": float(r.get("dec_lr_mult", 1.0))}]
        self.opt = torch.optim.Adam(groups, lr=r["lr"], betas=(0.9, 0.999), **kw)
        self.since_fired = torch.zeros(r["d_sae"], dtype=torch.long, device=device)
        self.step_i = 0

    def loss(self, x: torch.Tensor) -> dict:
        """Loss of one batch (scaled inputs): reconstruction + (ReLU) L1 + aux-k on dead latents.

        TopK and BatchTopK use the sparse kernels of `sparse.py` (one dense matmul per step) unless
        `sparse=False`; both paths compute the same function and gradients (tested)."""
        sae, r = self.sae, self.r
        arch = sae.cfg.arch
        b = x.shape[0]
        x_c = x - sae.b_dec
        if arch in ("topk", "batchtopk") and r.get("sparse", True):
            with torch.no_grad():
                pre = x_c @ sae.W_enc + sae.b_enc
                sel = sparse.select_topk(pre, sae.cfg.k) if arch == "topk" else sparse.select_batch_topk(pre, sae.cfg.k)
            rows, cols, offsets = sel
            vals = sparse.gather(x_c, sae.W_enc, sae.b_enc, pre, rows, cols, offsets).relu()
            x_hat = sparse.decode(sae.W_dec, sae.b_dec, rows, cols, offsets, vals)
            on = vals > 0
            fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool, device=x.device)
            fired[cols[on]] = True
            n_on, min_pos = on.sum(), (vals[on].min() if arch == "batchtopk" and bool(on.any()) else None)
            l1 = None
        else:
            pre = x_c @ sae.W_enc + sae.b_enc
            acts = sae.activate(pre, training=True)
            x_hat = sae.decode_scaled(acts)
            on = acts > 0
            fired, n_on = on.any(0), on.sum()
            min_pos = acts[on].min() if arch == "batchtopk" and bool(on.any()) else None
            l1 = acts.sum(-1).mean() if arch == "relu" else None
        err = x - x_hat
        loss = err.pow(2).sum(-1).mean()
        if l1 is not None:
            loss = loss + l1_at(self.step_i, r) * l1
        aux = None
        dead = self.since_fired >= r["dead_tokens"]
        n_dead = int(dead.sum())  # one host sync per step; cheap next to the matmuls
        if n_dead and r["aux_coef"] > 0:
            k_aux = min(r["aux_k"], n_dead)
            with torch.no_grad():
                pre_d = pre.detach() if pre.requires_grad else pre
                dead_idx = dead.nonzero().squeeze(1)  # top k_aux among the dead columns only (cheaper than masking)
                a_rows, a_cols, a_off = sparse.select_topk(pre_d.index_select(1, dead_idx), k_aux)
                a_cols = dead_idx[a_cols]
            a_vals = sparse.gather(x_c, sae.W_enc, sae.b_enc, pre_d, a_rows, a_cols, a_off).relu()
            e_hat = sparse.decode(sae.W_dec, torch.zeros_like(sae.b_dec), a_rows, a_cols, a_off, a_vals)
            aux = (err.detach() - e_hat).pow(2).sum(-1).mean()
            loss = loss + r["aux_coef"] * aux
        return {"loss": loss, "x": x, "x_hat": x_hat, "fired": fired, "l0": n_on / b, "min_pos": min_pos, "aux": aux}

    def step(self) -> dict:
        r, sae = self.r, self.sae
        x = self.stream.batch(self.step_i)
        for g in self.opt.param_groups:
            g["lr"] = lr_at(self.step_i, r) * g["lr_mult"]
        out = self.loss(x)
        self.opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        with torch.no_grad():
            g, w = sae.W_dec.grad, sae.W_dec  # keep only the gradient orthogonal to each unit-norm decoder row
            g.sub_((g * w).sum(-1, keepdim=True) * w)
        self.opt.step()
        sae.normalize_decoder()
        with torch.no_grad():
            self.since_fired += x.shape[0]
            self.since_fired[out["fired"]] = 0
            if out["min_pos"] is not None:
                sae.threshold.mul_(1 - r["threshold_lr"]).add_(r["threshold_lr"] * out["min_pos"])
        self.step_i += 1
        return out

    @staticmethod
    def stats(out: dict, since_fired: torch.Tensor, r: dict) -> dict:
        with torch.no_grad():
            x, x_hat = out["x"].double(), out["x_hat"].double()
            fvu = float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum().clamp(min=1e-30))
            return {"loss": float(out["loss"]), "fvu": fvu, "l0": float(out["l0"]),
                    "dead": float((since_fired >= r["dead_tokens"]).float().mean()),
                    "aux": None if out["aux"] is None else float(out["aux"])}

    # ---- checkpoints -----------------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"step": self.step_i, "sae": self.sae.state_dict(), "opt": self.opt.state_dict(),
                "since_fired": self.since_fired, "resolved": self.r}

    def save_checkpoint(self, folder: Path) -> None:
        fsio.atomic_write(folder / CHECKPOINT_FILE, lambda fh: torch.save(self.state(), fh),
                          hint="The previous checkpoint is kept; rerun with --resume once fixed.")

    def load_checkpoint(self, state: dict) -> None:
        self.sae.load_state_dict(state["sae"])
        self.opt.load_state_dict(state["opt"])
        self.since_fired.copy_(state["since_fired"])
        self.step_i = int(state["step"])


# How a run goes, not what it trains: not compared on --resume. Every other field of TrainConfig is.
RUN_ONLY = ("device", "checkpoint_every", "log_every", "expansion")  # expansion: compared as the resolved d_sae


def make_config(config: Optional[TrainConfig], site: Optional[str], settings: dict) -> TrainConfig:
    """The one TrainConfig of a run: `config`, with `site` and keyword settings (TrainConfig fields) on top."""
    unknown = sorted(set(settings) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise TypeError(f"train() got unknown setting(s) {', '.join(unknown)}; the settings are TrainConfig's "
                        "fields.")
    cfg = replace(config, **settings) if config is not None else TrainConfig(**settings)
    if site is not None:
        cfg = replace(cfg, site=site)
    cfg.check()
    return cfg


def _load_checkpoint(path: Path, dev) -> dict:
    try:
        return torch.load(path, map_location=dev, weights_only=False)
    except Exception as err:  # noqa: BLE001 - torch raises several types for a truncated file
        raise DataError(f"{path} is truncated or corrupt ({type(err).__name__}: {str(err).splitlines()[0]}). Nothing "
                        "was changed. Delete it to start over in this folder, or choose another out.", "out") from None


def _check_resume(old: dict, r: dict, out: Path) -> None:
    """Refuse a resume whose settings differ from the checkpoint's, naming each key."""
    old = dict(old)
    if old.get("arch") == "relu":  # checkpoints from before the L1 warm-up existed trained without one
        old.setdefault("l1_warmup_steps", 0)
    keys = [f.name for f in fields(TrainConfig) if f.name not in RUN_ONLY] + ["d_in", "d_sae"]
    diff = [key for key in dict.fromkeys(keys) if old.get(key) != r.get(key)]
    if diff:
        raise ConfigError("--resume with different settings than the run in " + f"{out}: " + ", ".join(
            f"{key}={old.get(key)!r} there, {r.get(key)!r} now" for key in diff)
            + ". Use the same settings, or another --out.", diff[0])


def _few_rows_warning(n_train: int, batch_tokens: int) -> None:
    if n_train < batch_tokens:
        better = 2 ** max(0, int(math.log2(max(1, n_train // 10))))
        warnings.warn(f"The dataset has {n_train:,} training rows, fewer than one batch (batch_tokens={batch_tokens:,}"
                      f"): each step sees the same rows. Use batch_tokens={better} (--batch-tokens {better}) for "
                      "about 10 steps per pass, or extract more tokens.", UserWarning, stacklevel=3)


def _init_sae(ds, site: str, r: dict, n_train: int, n_total: int, data, state: Optional[dict]) -> SAE:
    """A new SAE (scale and decoder bias from a sample of training rows) or the shape of the checkpoint's."""
    d_in, seed = r["d_in"], r["seed"]
    if state is None:
        sample = sample_rows(ds, site, n_train, seed=seed)
        mean_norm = float(np.linalg.norm(sample.astype(np.float64), axis=1).mean())
        if not math.isfinite(mean_norm) or mean_norm == 0:
            raise MechscopeError(f"The activations at {site} have mean norm {mean_norm}: cannot scale them. "
                                 "Check the dataset (fp16 overflow? use bf16).")
        scale = math.sqrt(d_in) / mean_norm
        data_mean = torch.from_numpy((sample.astype(np.float64) * scale).mean(0)).float()
    else:
        scale, data_mean = state["resolved"]["input_scale"], None
    r["input_scale"] = scale
    provenance = {"path": str(data) if isinstance(data, (str, Path)) else None, "model": manifest_model(ds),
                  "rows": n_total, "train_rows": [0, n_train], "heldout_rows": [n_train, n_total]}
    manifest = getattr(ds, "manifest", None) or {}
    for key in ("max_length", "mode", "exclude_bos"):  # what the splice test of `sae eval` reuses
        if key in manifest:
            provenance[key] = manifest[key]
    scfg = SAEConfig(d_in=d_in, d_sae=r["d_sae"], arch=r["arch"], k=r["k"], input_scale=scale, site=site,
                     model=provenance["model"], extra={"train": r, "data": provenance})
    return SAE.init(scfg, generator=torch.Generator().manual_seed(seed), data_mean=data_mean)


def train(data, site: Optional[str] = None, out=None, *, config: Optional[TrainConfig] = None, resume: bool = False,
          progress: bool = True, _stop_after: Optional[int] = None, **settings) -> SAE:
    """Train a SAE on `site` of the activation dataset `data` (a folder or a dataset object) and write it to `out`.

    The settings are one `TrainConfig` (`config=`), or its fields as keywords (`arch="topk", k=32, ...`), or both
    (keywords win). Mirrors `mechscope sae train`. Returns the trained SAE; `out` then holds sae.safetensors,
    config.json (the resolved config, the data's provenance and the final training statistics), train_log.jsonl and
    checkpoint.pt. A Ctrl-C stays a KeyboardInterrupt; the last checkpoint stays and `resume=True` continues it.
    """
    cfg = make_config(config, site, settings)
    if out is None:
        raise ConfigError("No output folder: pass out=DIR (--out DIR).", "out")
    out = Path(out)
    ds = open_dataset(data)
    site = check_site(ds, cfg.site)
    cfg = replace(cfg, site=site)
    probe(ds, site)
    dev = resolve_device(cfg.device)
    n_train, n_total = split_rows(ds, cfg.heldout_tokens)
    r = _resolve(cfg, int(ds.d(site)), n_train)
    state = None
    if out.exists() and any(out.iterdir()):
        if not resume:
            raise ConfigError(f"{out} is not empty (an earlier run?). Pass --resume to continue it, or choose "
                              "another --out. Nothing was overwritten.", "out")
        if (out / CHECKPOINT_FILE).exists():
            state = _load_checkpoint(out / CHECKPOINT_FILE, dev)
            _check_resume(state["resolved"], r, out)
    _few_rows_warning(n_train, cfg.batch_tokens)
    out.mkdir(parents=True, exist_ok=True)
    sae = _init_sae(ds, site, r, n_train, n_total, data, state)
    fsio.write_json(out / CONFIG_FILE, json.loads(json.dumps(sae.config_dict(), default=str)))
    stream = RowStream(ds, site, n_train, r["batch_tokens"], r["seed"], scale=r["input_scale"],
                       buffer_tokens=r["buffer_tokens"], device=dev)
    trainer = Trainer(sae, r, stream, dev)
    if state is not None:
        trainer.load_checkpoint(state)
        if trainer.step_i >= r["steps"] and (out / WEIGHTS_FILE).exists():
            stream.close()
            return SAE.load(out, device=dev)
    return _loop(trainer, out, progress, _stop_after)


def _loop(trainer: Trainer, out: Path, progress: bool, stop_after: Optional[int]) -> SAE:
    """Steps until the end, a log line every log_every steps, a checkpoint every checkpoint_every; then the SAE."""
    from tqdm.auto import tqdm

    r, sae, stream = trainer.r, trainer.sae, trainer.stream
    log_every, checkpoint_every = r["log_every"], r["checkpoint_every"]
    log = open(out / LOG_FILE, "a", encoding="utf-8")
    bar = tqdm(total=r["steps"], initial=trainer.step_i, unit="step", file=sys.stderr, disable=not progress,
               dynamic_ncols=True, desc=f"sae {r['arch']} {r['site']}")
    t0, s0, last = time.perf_counter(), trainer.step_i, {}
    try:
        while trainer.step_i < r["steps"]:
            outp = trainer.step()
            i = trainer.step_i
            if i % log_every == 0 or i == r["steps"]:
                last = trainer.stats(outp, trainer.since_fired, r)
                entry = {"step": i, "tokens": i * r["batch_tokens"], "lr": lr_at(i - 1, r), **last}
                if r["arch"] == "relu":
                    entry["l1"] = l1_at(i - 1, r)
                log.write(json.dumps(json_safe(entry), allow_nan=False) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{last['loss']:.4g}", fvu=f"{last['fvu']:.3f}", l0=f"{last['l0']:.1f}",
                                dead=f"{last['dead']:.1%}", refresh=False)
            bar.update(1)
            if i % checkpoint_every == 0 and i < r["steps"]:
                trainer.save_checkpoint(out)
            if stop_after is not None and i >= stop_after:  # tests: simulate a kill right here
                raise KeyboardInterrupt
    finally:
        bar.close()
        log.close()
        stream.close()
    seconds = time.perf_counter() - t0
    trainer.save_checkpoint(out)
    sae.cfg.extra["result"] = {"steps": r["steps"], "tokens": r["tokens"], "seconds_this_session": seconds,
                               "tokens_per_s_this_session": (r["steps"] - s0) * r["batch_tokens"] / max(seconds, 1e-9),
                               "last_batch": last}
    sae.eval()
    sae.save(out)
    return sae
