"""Head scores: how much each attention head behaves like a previous-token, current-token, first-token,
duplicate-token or induction head, each next to a baseline, and a causal check of the induction heads.

Every score is one statistic over a target mask M (T, T) built from a sequence's tokens (docs/heads.md):

  score(sequence, layer, head) = mean over query positions i that have a target of  sum_j pattern[i, j] * M[i, j]

  previous_token   M[i, i-1] for i >= 1
  current_token    M[i, i]   for i >= 1
  first_token      M[i, 0]   for i >= 1
  duplicate_token  M[i, j] for every j < i with token[j] == token[i]
  induction        M[i, j] for every 1 <= j < i with token[j-1] == token[i]   (on [BOS] + r + r: i -> i - n + 1)

The baseline is the same statistic, with the same masks (the same query -> key positions), on control sequences
that have no repeat: [BOS] + r + r' (r' fresh random tokens) for repeated inputs, the tokens shuffled for prompts.
Scores are computed inside the forward, one layer's pattern at a time, for whole batches (never per head).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import ConfigError, MechscopeError
from .targets import SCORE_TYPES, target_masks


@dataclass
class HeadInputs:
    """The scored sequences (token ids) and their controls (same lengths, no repeat)."""
    tokens: list            # [[int]] scored sequences
    control: list           # [[int]] baseline sequences, control[b] as long as tokens[b]
    kind: str               # "repeated" or "prompts"
    seed: int = 0
    seq_len: Optional[int] = None   # n of [BOS] + r + r
    texts: Optional[list] = None    # the prompts, for kind == "prompts"


def _bos_id(tokenizer) -> int:
    for name in ("bos_token_id", "cls_token_id", "eos_token_id"):
        tid = getattr(tokenizer, name, None)
        if tid is not None:
            return int(tid)
    raise MechscopeError("This tokenizer has no BOS, CLS or EOS token to start the repeated sequences with. "
                         "Score your own text with --prompts FILE instead.", "prompts")


def token_pool(model) -> np.ndarray:
    """Ids random tokens are drawn from: every id the tokenizer and the embedding both know, minus special tokens."""
    tok = model.tokenizer
    n = min(model.cfg.d_vocab, len(tok))
    special = set(int(i) for i in tok.all_special_ids)
    return np.array([i for i in range(n) if i not in special], dtype=np.int64)


def check_sizes(seq_len: int, batch: int) -> None:
    """Model-independent checks of --seq-len and --batch (made before any model is loaded)."""
    if not isinstance(seq_len, int) or seq_len < 2:
        raise ConfigError(f"seq_len={seq_len!r} is too small: the repeated half needs at least 2 tokens to show "
                          "induction. Use 2 or more (50 is the usual choice).", "seq_len")
    if not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"batch={batch!r} is not a number of sequences. Use 1 or more (default 10).", "batch")


def repeated_inputs(model, seq_len: int = 50, batch: int = 10, seed: int = 0) -> HeadInputs:
    """`batch` sequences [BOS] + r + r, r = `seq_len` distinct random tokens; controls [BOS] + r + r'."""
    check_sizes(seq_len, batch)
    pool = token_pool(model)
    if seq_len > len(pool):
        raise ConfigError(f"seq_len={seq_len} is larger than this tokenizer's {len(pool)} ordinary tokens (each "
                          f"random half uses distinct tokens). Use seq_len <= {len(pool)}.", "seq_len")
    if model.cfg.n_ctx and 2 * seq_len + 1 > model.cfg.n_ctx:
        raise ConfigError(f"seq_len={seq_len} makes sequences of {2 * seq_len + 1} tokens; {model.name} reads at "
                          f"most {model.cfg.n_ctx}. Use seq_len <= {(model.cfg.n_ctx - 1) // 2}.", "seq_len")
    rng = np.random.default_rng(seed)
    bos = _bos_id(model.tokenizer)
    tokens, control = [], []
    for _ in range(batch):
        r = rng.choice(pool, size=seq_len, replace=False).tolist()
        r2 = rng.choice(pool, size=seq_len, replace=False).tolist()
        tokens.append([bos] + r + r)
        control.append([bos] + r + r2)
    return HeadInputs(tokens, control, "repeated", seed, seq_len)


def prompt_inputs(model, prompts: Sequence[str], seed: int = 0) -> HeadInputs:
    """Scored sequences from text; controls are the same tokens shuffled (a leading special token stays first)."""
    prompts = list(prompts)
    if not prompts:
        raise MechscopeError("prompts is empty: give at least one line of text.", "prompts")
    rng = np.random.default_rng(seed)
    special = set(int(i) for i in model.tokenizer.all_special_ids)
    tokens, control = [], []
    for i, text in enumerate(prompts):
        if not text or not text.strip():
            raise MechscopeError(f"prompts: prompt {i + 1} is empty. Give one prompt of text per line.", "prompts")
        ids = [int(t) for t in model.encode(text)]
        if len(ids) < 2:
            raise MechscopeError(f"prompts: prompt {i + 1} ({text!r}) is a single token; head scores need at "
                                 "least 2 tokens per prompt.", "prompts")
        if model.cfg.n_ctx and len(ids) > model.cfg.n_ctx:
            raise MechscopeError(f"prompts: prompt {i + 1} is {len(ids)} tokens long; {model.name} reads at most "
                                 f"{model.cfg.n_ctx}. Shorten or split it.", "prompts")
        keep = 1 if ids[0] in special else 0
        tokens.append(ids)
        control.append(ids[:keep] + [ids[keep + k] for k in rng.permutation(len(ids) - keep)])
    return HeadInputs(tokens, control, "prompts", seed, texts=prompts)


def _row_budget(model, t: int, per_value: int) -> int:
    """Rows per forward so that one (rows, T, per_value) float32 tensor stays near 256 MB."""
    return max(1, int(2 ** 28 // max(1, 4 * t * per_value)))


def _chunks(n: int, size: int):
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


def pattern_scores(model, sequences: Sequence[Sequence[int]], masks: Sequence[torch.Tensor],
                   batch_size: Optional[int] = None) -> torch.Tensor:
    """(B, n_layers, 5, n_heads) per-sequence scores of `sequences` against their (5, T_b, T_b) target masks.

    Each layer's pattern is reduced as soon as it is computed (one eager layer alive at a time); the forward stops
    after the last layer's attention."""
    cfg = model.cfg
    t_max = max(map(len, sequences))
    size = batch_size or _row_budget(model, t_max, t_max * (cfg.n_heads + len(SCORE_TYPES)))
    out = torch.zeros(len(sequences), cfg.n_layers, len(SCORE_TYPES), cfg.n_heads)
    for sl in _chunks(len(sequences), size):
        rows = [list(s) for s in sequences[sl]]
        t = max(map(len, rows))
        m = torch.stack([torch.nn.functional.pad(masks[k], (0, t - masks[k].shape[-1]) * 2)
                         for k in range(sl.start, sl.stop)]).to(model.device)  # (b, 5, T, T)
        nq = (m.sum(-1) > 0).sum(-1).float()  # (b, 5): query positions with a target
        got = {}

        def observer(layer):
            def fn(p):  # p (b, H, T, T)
                got[layer] = torch.einsum("bhij,bkij->bkh", p.float(), m).cpu()  # (b, 5, H)
                return p
            return fn

        patch = {f"blocks.{L}.attn.hook_pattern": observer(L) for L in range(cfg.n_layers)}
        model.run(rows, capture=[f"blocks.{cfg.n_layers - 1}.attn.hook_z"], patch=patch, logits=False)
        total = torch.stack([got[L] for L in range(cfg.n_layers)], 1)  # (b, L, 5, H)
        out[sl] = total / nq.cpu()[:, None, :, None]  # 0/0 = nan where a sequence has no query of that type
    return out


def _mean_std(x: torch.Tensor) -> tuple:
    """Mean and standard deviation (ddof 1; 0 for a single value) over axis 0, ignoring NaN (no query)."""
    a = x.numpy().astype(np.float64)
    ok = np.isfinite(a)
    count = ok.sum(0)
    mean = np.where(count > 0, np.nansum(a, 0) / np.maximum(count, 1), np.nan)
    dev = np.where(ok, a - mean[None], 0.0)
    std = np.where(count > 1, np.sqrt((dev ** 2).sum(0) / np.maximum(count - 1, 1)), np.where(count == 1, 0., np.nan))
    return mean, std


@dataclass
class HeadsResult:
    model: str
    inputs: HeadInputs
    scores: dict        # type -> (L, H) mean over sequences
    spread: dict        # type -> (L, H) standard deviation over sequences
    baseline: dict      # type -> (L, H) the same statistic on the controls
    baseline_spread: dict
    per_sequence: dict  # type -> (B, L, H)
    verify: Optional[dict] = None
    command: str = ""
    extra: dict = field(default_factory=dict)

    def top(self, kind: str, k: int = 5) -> list:
        """The k highest-scoring heads of a type: [(layer, head, score)], best first (NaN scores last)."""
        s = np.nan_to_num(np.asarray(self.scores[kind], dtype=float), nan=-np.inf)
        order = np.argsort(-s, axis=None, kind="stable")[:k]
        n_heads = s.shape[1]
        return [(int(i // n_heads), int(i % n_heads), float(self.scores[kind][i // n_heads][i % n_heads]))
                for i in order]

    def to_json(self) -> dict:
        inp = self.inputs
        lists = lambda d: {k: np.asarray(v).tolist() for k, v in d.items()}  # noqa: E731
        desc = ({"kind": "repeated", "seq_len": inp.seq_len, "batch": len(inp.tokens), "seed": inp.seed,
                 "layout": "[BOS] + r + r, r = seq_len distinct random tokens; control [BOS] + r + r'"}
                if inp.kind == "repeated" else
                {"kind": "prompts", "seed": inp.seed, "texts": inp.texts,
                 "layout": "token ids of each prompt; control: the same tokens shuffled"})
        return {"model": self.model, "inputs": [list(map(int, s)) for s in inp.tokens],
                "control": [list(map(int, s)) for s in inp.control], "input_info": desc,
                "score_types": list(SCORE_TYPES), "scores": lists(self.scores), "baseline": lists(self.baseline),
                "spread": lists(self.spread), "baseline_spread": lists(self.baseline_spread),
                "verify": self.verify, "command": self.command, **self.extra}

    def save(self, out_dir, overwrite: bool = False) -> dict:
        """Write heads.json, heads.png and report.html into out_dir; refuse to replace them unless `overwrite`."""
        from .heads_report import write_outputs

        return write_outputs(self, out_dir, overwrite=overwrite)


def score_heads(model, inputs: HeadInputs, batch_size: Optional[int] = None) -> HeadsResult:
    """Scores and baselines of every head for the given inputs (scored and control rows in the same forwards)."""
    masks = [target_masks(s) for s in inputs.tokens]
    per = pattern_scores(model, list(inputs.tokens) + list(inputs.control), masks + masks, batch_size)
    b = len(inputs.tokens)
    scored, ctrl = per[:b], per[b:]
    res = {k: {} for k in ("scores", "spread", "baseline", "baseline_spread", "per_sequence")}
    for ti, kind in enumerate(SCORE_TYPES):
        res["scores"][kind], res["spread"][kind] = _mean_std(scored[:, :, ti])
        res["baseline"][kind], res["baseline_spread"][kind] = _mean_std(ctrl[:, :, ti])
        res["per_sequence"][kind] = scored[:, :, ti].numpy()
    return HeadsResult(model=model.name, inputs=inputs, **res)


def head_scores(model, seq_len: int = 50, batch: int = 10, seed: int = 0, prompts: Optional[Sequence[str]] = None,
                verify: Optional[int] = None, ablation: str = "zero", draws: int = 5,
                batch_size: Optional[int] = None) -> HeadsResult:
    """Score every head (SCORE_TYPES) on [BOS] + r + r repeated random tokens, or on `prompts`; with `verify=K`
    also ablate the top-K induction heads and K random heads (`draws` times) and compare the repeated-half loss."""
    from .verify import check_verify, verify_heads

    check_verify(verify, ablation, draws)
    inputs = prompt_inputs(model, prompts, seed) if prompts is not None else \
        repeated_inputs(model, seq_len, batch, seed)
    if verify:
        check_verify(verify, ablation, draws, model.cfg.n_layers * model.cfg.n_heads)
    result = score_heads(model, inputs, batch_size)
    if verify:
        result.verify = verify_heads(model, inputs, result.scores["induction"], verify, ablation, draws, seed,
                                     batch_size)
    return result
