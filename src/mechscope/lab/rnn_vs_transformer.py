"""Transformer vs LSTM, measured: parameter-matched models, the same optimizer, data and step budget, several seeds.

    from mechscope.lab.rnn_vs_transformer import Config, run
    results = run("out/rnn", Config.quick())

writes `results.json`, one PNG per curve and `report.html` into the folder, and returns the results dict.

For each task (see `rnn_tasks`) and each seed, a Transformer and an LSTM with (nearly) the same number of
parameters are trained on identical batches with AdamW (same learning rate, warm-up and cosine decay, gradient
clipping), then scored on fixed held-out batches at every test size: copy accuracy against the lag, induction
accuracy against the length of the repeated block, and running-parity accuracy on strings longer than any seen
in training. Then both are timed against the sequence length (see `rnn_timing`).
"""
from __future__ import annotations

import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from . import rnn_tasks
from .rnn_models import build_pair, n_params
from .rnn_timing import measure
from .rnn_tasks import IGNORE, make_batch

MODELS = ("transformer", "lstm")


@dataclass(frozen=True)
class Config:
    """Every setting of a run (recorded in results.json). `Config.quick()` and `Config.full()` are the presets."""

    seeds: int = 3
    steps: int = 800
    batch: int = 32
    lr: float = 3e-3
    warmup: float = 0.05  # fraction of the steps with a linear warm-up, then cosine decay to 10% of lr
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    eval_examples: int = 512
    # task -> (smallest, largest) size sampled in training, and the sizes tested
    train_sizes: dict = field(default_factory=lambda: {"copy": (0, 48), "induction": (4, 16), "parity": (2, 16)})
    test_sizes: dict = field(default_factory=lambda: {"copy": [0, 8, 16, 32, 48], "induction": [4, 8, 16, 24, 32],
                                                      "parity": [8, 16, 24, 32, 48, 64]})
    timing_lengths: tuple = (32, 64, 128, 256, 512, 1024)
    timing_batch: int = 8
    timing_repeats: int = 5
    new_tokens: int = 16

    @classmethod
    def full(cls) -> "Config":
        return cls()

    @classmethod
    def quick(cls) -> "Config":
        return cls(seeds=2, steps=400, eval_examples=256,
                   train_sizes={"copy": (0, 24), "induction": (4, 12), "parity": (2, 12)},
                   test_sizes={"copy": [0, 4, 8, 16, 24], "induction": [4, 8, 12, 16, 24],
                               "parity": [8, 12, 16, 24, 32]},
                   timing_lengths=(32, 64, 128, 256, 512), timing_repeats=3)

    @classmethod
    def tiny(cls) -> "Config":
        """For tests: seconds, not minutes (the numbers mean little)."""
        return cls(seeds=1, steps=30, batch=16, d_model=32, eval_examples=64,
                   train_sizes={"copy": (0, 4), "induction": (4, 6), "parity": (2, 6)},
                   test_sizes={"copy": [0, 4], "induction": [4, 8], "parity": [6, 12]},
                   timing_lengths=(16, 32), timing_batch=2, timing_repeats=1, new_tokens=4)

    def check(self) -> "Config":
        for name in ("seeds", "steps", "batch", "eval_examples", "timing_batch", "timing_repeats", "new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1.", name)
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model={self.d_model} must be a multiple of n_heads={self.n_heads}.", "d_model")
        if not self.lr > 0:
            raise ConfigError(f"lr={self.lr} must be positive.", "lr")
        return self

    def max_len(self) -> int:
        """Positions the Transformer must hold: the longest test or training sequence, or timing context."""
        longest = [rnn_tasks.max_len(t, max(list(self.test_sizes[t]) + [self.train_sizes[t][1]]))
                   for t in rnn_tasks.TASKS]
        return max(longest + [max(self.timing_lengths) + self.new_tokens])


def lr_at(step: int, cfg: Config) -> float:
    warm = max(1, int(cfg.warmup * cfg.steps))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    t = (step - warm) / max(1, cfg.steps - warm)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def loss_on(model, ids, targets) -> torch.Tensor:
    logits = model(ids)  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)


def train(model, task: str, cfg: Config, seed: int) -> list:
    """Train on `cfg.steps` batches drawn from `seed` (the same batches for both models); returns the losses."""
    gen = torch.Generator().manual_seed(1000 + seed)
    lo, hi = cfg.train_sizes[task]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    losses = []
    model.train()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        size = int(torch.randint(lo, hi + 1, (1,), generator=gen))
        ids, targets = make_batch(task, gen, cfg.batch, size)
        loss = loss_on(model, ids, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def accuracy(model, task: str, size: int, n: int) -> dict:
    """On n held-out examples (fixed per task and size): per-token accuracy over the scored positions, the share
    of examples with every scored token right, and the accuracy at the last position."""
    model.eval()
    gen = torch.Generator().manual_seed(777_000 + 1009 * size + len(task))
    ids, targets = make_batch(task, gen, n, size)
    if ids.shape[1] == 0:
        return {"token": None, "sequence": None, "last": None}
    pred = model(ids).argmax(-1)  # (n, T)
    scored = targets != IGNORE
    right = (pred == targets) & scored
    last = [int(torch.nonzero(row)[-1]) for row in scored]
    return {"token": float(right.sum() / scored.sum()),
            "sequence": float((right.sum(1) == scored.sum(1)).float().mean()),
            "last": float(torch.tensor([bool(right[i, j]) for i, j in enumerate(last)]).float().mean())}


def summarize(runs: list, sizes, metric: str) -> dict:
    """model -> {"mean", "min", "max"} lists over the seeds, one entry per size."""
    out = {}
    for name in MODELS:
        per_size = [[r["accuracy"][str(s)][metric] for r in runs if r["model"] == name] for s in sizes]
        out[name] = {"mean": [sum(v) / len(v) for v in per_size], "min": [min(v) for v in per_size],
                     "max": [max(v) for v in per_size]}
    return out


METRIC = {"copy": "token", "induction": "token", "parity": "last"}


def run_task(task: str, cfg: Config, log: Callable[[str], None]) -> dict:
    vocab = rnn_tasks.TASKS[task][1]
    runs, params = [], {}
    for seed in range(cfg.seeds):
        pair = dict(zip(MODELS, build_pair(vocab, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.max_len(), seed)))
        params = {name: n_params(m) for name, m in pair.items()}
        params["lstm_hidden"] = pair["lstm"].hidden
        for name, model in pair.items():
            t0 = time.perf_counter()
            losses = train(model, task, cfg, seed)
            acc = {str(s): accuracy(model, task, s, cfg.eval_examples) for s in cfg.test_sizes[task]}
            runs.append({"model": name, "seed": seed, "seconds": time.perf_counter() - t0,
                         "final_loss": sum(losses[-20:]) / len(losses[-20:]),
                         "losses": losses[::max(1, len(losses) // 200)], "accuracy": acc})
            log(f"{task}: {name} seed {seed}: " + ", ".join(
                f"{rnn_tasks.TASKS[task][2]}={s} {acc[str(s)][METRIC[task]]:.2f}" for s in cfg.test_sizes[task]))
    sizes = cfg.test_sizes[task]
    return {"size_name": rnn_tasks.TASKS[task][2], "vocab": vocab, "train_sizes": list(cfg.train_sizes[task]),
            "test_sizes": list(sizes), "metric": METRIC[task], "params": params, "runs": runs,
            "summary": {m: summarize(runs, sizes, m) for m in ("token", "sequence", "last")}}


CAVEATS = [
    "Small models (about {params:,} parameters), one learning rate for both (not tuned per architecture), and a "
    "short step budget: another budget or learning rate can change which model wins a task.",
    "The Transformer uses sinusoidal absolute positions; relative or rotary positions, or none, generalize to "
    "longer strings differently. Lengths beyond the training range test extrapolation, which absolute positions "
    "are known to do poorly.",
    "The LSTM is PyTorch's nn.LSTM on CPU; on a GPU with cuDNN, and with batched generation, the timings change.",
    "Timings are wall-clock medians on a shared CPU with {threads} thread(s): compare the curves' shapes, not the "
    "absolute numbers.",
    "Memory is counted, not sampled: the bytes of the tensors autograd keeps for backward in one training forward "
    "(parameters excluded), and the bytes generation carries between tokens (KV cache vs (h, c)). Allocator "
    "overhead and temporary buffers are not included; tracemalloc would not see PyTorch's tensors at all.",
    "Accuracy is on fixed held-out batches with teacher forcing; for copy and parity that equals greedy "
    "decoding whenever every scored token is right (the 'sequence' metric).",
]


def run(out: str | Path, cfg: Optional[Config] = None, log: Optional[Callable[[str], None]] = None,
        command: str = "") -> dict:
    """The whole comparison; writes results.json, PNGs and report.html into `out` and returns the results."""
    from ..fsio import write_json
    from .rnn_report import write_report

    cfg = (cfg or Config.quick()).check()
    log = log or (lambda msg: None)
    out = Path(out)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    tasks = {task: run_task(task, cfg, log) for task in rnn_tasks.TASKS}
    tf, lstm = build_pair(32, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.max_len(), 0)
    timing = measure({"transformer": tf, "lstm": lstm}, 32, cfg.timing_lengths, cfg.timing_batch,
                     cfg.timing_repeats, cfg.new_tokens, log)
    timing["params"] = {"transformer": n_params(tf), "lstm": n_params(lstm), "lstm_hidden": lstm.hidden}
    fmt = {"params": n_params(tf), "threads": torch.get_num_threads()}
    results = {"config": asdict(cfg), "command": command, "tasks": tasks, "timing": timing,
               "caveats": [c.format(**fmt) for c in CAVEATS],
               "environment": {"torch": torch.__version__, "python": platform.python_version(),
                               "machine": platform.machine(), "threads": torch.get_num_threads()},
               "seconds": time.perf_counter() - t0}
    figures = write_report(results, out)
    results["figures"] = sorted(figures)
    write_json(out / "results.json", results)
    return results


