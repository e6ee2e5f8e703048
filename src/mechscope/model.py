"""`Model`: an HF model, its tokenizer, its family adapter and `run`, the capture/patch entry point."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Optional, Sequence, Union

import torch

from . import hooks, kernels
from .adapters import Adapter, adapter_for
from .hooks import ActivationCache, Batch, PatchValue
from .errors import MechscopeError, suggest
from .sites import Site, all_site_names, resolve

Prompts = Union[str, Sequence[str], torch.Tensor, Sequence[Sequence[int]], Batch]


@dataclass(frozen=True)
class ModelConfig:
    family: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int

    @classmethod
    def from_hf(cls, config, family: str) -> "ModelConfig":
        d_model = config.hidden_size
        n_heads = config.num_attention_heads
        d_mlp = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * d_model
        n_ctx = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 0)
        return cls(
            family=family,
            n_layers=config.num_hidden_layers,
            d_model=d_model,
            n_heads=n_heads,
            n_kv_heads=getattr(config, "num_key_value_heads", None) or n_heads,
            d_head=getattr(config, "head_dim", None) or d_model // n_heads,
            d_mlp=d_mlp,
            d_vocab=config.vocab_size,
            n_ctx=n_ctx,
        )

    def to_dict(self) -> dict:
        return asdict(self)


class Model:
    """A loaded model. `hf` is the untouched Hugging Face model, `tokenizer` its tokenizer, `cfg` the shape facts."""

    def __init__(self, hf_model, tokenizer, name: str = "custom", source: Optional[dict] = None):
        self.hf = hf_model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.source = source or {"model": name}
        self.adapter: Adapter = adapter_for(hf_model.config)
        self.cfg = ModelConfig.from_hf(hf_model.config, self.adapter.family)
        if tokenizer is not None and tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        kernels.install(hf_model)
        self._modules = dict(hf_model.named_modules())

    def __repr__(self) -> str:
        return f"Model({self.name!r}, family={self.cfg.family}, layers={self.cfg.n_layers}, d_model={self.cfg.d_model})"

    # ---- modules and sites -------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype

    def module(self, path: str) -> torch.nn.Module:
        """The HF submodule at a dotted path (the adapter's `base.` prefix is optional)."""
        for candidate in (path, path.split(".", 1)[-1] if path.startswith(self.adapter.base + ".") else None):
            if candidate is not None and candidate in self._modules:
                return self._modules[candidate]
        raise MechscopeError(f"No module {path!r} in this model. {suggest(path, [n for n in self._modules if n])}")

    def site(self, name: Union[str, Site]) -> Site:
        return name if isinstance(name, Site) else resolve(name, self.adapter, self.cfg.n_layers)

    @property
    def has_lm_head(self) -> bool:
        """Whether the model maps the residual stream onto the vocabulary (False for a bare encoder or body and for
        a sequence classifier)."""
        return self.adapter.unembed in self._modules

    def require_lm_head(self, what: str) -> None:
        """A one-line MechscopeError if `what` (e.g. "next-token") needs vocabulary logits this model lacks."""
        if self.has_lm_head:
            return
        kind = ("a sequence classifier" if "ForSequenceClassification" in type(self.hf).__name__
                else "a bare encoder/body")
        raise MechscopeError(
            f"{what} needs a language-model head (vocabulary logits), and {self.name} has none ({kind}). Use "
            "instead a fine-tuned classifier's labels (`mechscope finetune`, then load its output folder), probes "
            "(`mechscope probe`), or the lens-free commands (inspect, tokenize, extract).", "model")

    def site_names(self) -> list[str]:
        return all_site_names(self.adapter, self.cfg.n_layers)

    # ---- tokens ------------------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text)["input_ids"]

    def to_str_tokens(self, ids: Iterable[int]) -> list[str]:
        return [self.tokenizer.decode([int(i)]) for i in ids]

    def batch(self, prompts: Prompts, padding_side: str = "right") -> Batch:
        """Tokenize and pad. Position ids count real tokens only, so padding on either side changes nothing."""
        if isinstance(prompts, Batch):
            return prompts
        if padding_side not in ("left", "right"):
            raise MechscopeError(f"padding_side={padding_side!r} is not valid: use 'left' or 'right'.")
        if isinstance(prompts, str):
            prompts = [prompts]
        if isinstance(prompts, torch.Tensor):
            rows = [list(map(int, r)) for r in (prompts if prompts.ndim == 2 else prompts[None])]
        elif len(prompts) and all(isinstance(p, str) for p in prompts):
            for i, p in enumerate(prompts):
                if not p:
                    raise MechscopeError(f"Prompt {i} is empty. Give at least one character of text.")
            rows = [self.encode(p) for p in prompts]
        elif len(prompts):
            rows = [list(map(int, r)) for r in prompts]
        else:
            raise MechscopeError("No prompts given: pass a string, a list of strings or a (batch, pos) token tensor.")
        for i, r in enumerate(rows):
            if not r:
                raise MechscopeError(f"Prompt {i} has no tokens. Give at least one character of text.")
            if self.cfg.n_ctx and len(r) > self.cfg.n_ctx:
                raise MechscopeError(
                    f"Prompt {i} is {len(r)} tokens long; {self.name} reads at most {self.cfg.n_ctx} tokens "
                    "(n_ctx). Shorten the prompt or split it."
                )
        t = max(map(len, rows))
        pad = self.tokenizer.pad_token_id if self.tokenizer is not None else 0
        ids = torch.full((len(rows), t), pad if pad is not None else 0, dtype=torch.long)
        mask = torch.zeros((len(rows), t), dtype=torch.bool)
        for i, r in enumerate(rows):
            sl = slice(0, len(r)) if padding_side == "right" else slice(t - len(r), t)
            ids[i, sl] = torch.tensor(r)
            mask[i, sl] = True
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
        dev = self.device
        return Batch(ids.to(dev), mask.to(dev), pos.to(dev), padding_side)

    def packable(self, max_len: int) -> bool:
        """Whether `packed` batches of sequences up to `max_len` tokens are supported (causal, no sliding window
        shorter than that)."""
        c = self.hf.config
        window = getattr(c, "sliding_window", None)
        if window is not None and not getattr(c, "use_sliding_window", True):
            window = None
        return self.adapter.causal and (not window or window >= max_len)

    def packed(self, seqs: Sequence[Sequence[int]]) -> Batch:
        """Token sequences side by side in one row (1, sum of lengths), each attending only to itself: the same
        activations as running each alone (up to float rounding), with no padding at all. Causal models only."""
        seqs = [list(map(int, s)) for s in seqs]
        if not seqs or any(not s for s in seqs):
            raise MechscopeError("packed() needs at least one sequence, and every sequence at least one token.")
        longest = max(map(len, seqs))
        if not self.packable(longest):
            raise MechscopeError(f"{self.name} cannot run packed batches of sequences up to {longest} tokens "
                                 "(bidirectional attention or a shorter sliding window). Use batch() instead.")
        dev = self.device
        ids = torch.tensor([t for s in seqs for t in s], dtype=torch.long)[None]  # (1, T)
        pos = torch.cat([torch.arange(len(s)) for s in seqs])[None]  # (1, T)
        return Batch(ids.to(dev), torch.ones_like(ids, dtype=torch.bool).to(dev), pos.to(dev), "right",
                     tuple(len(s) for s in seqs))

    # ---- running --------------------------------------------------------------------------------------------------
    def forward_kwargs(self, batch: Batch) -> dict:
        kw = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask.long(),
                  position_ids=batch.position_ids)
        if batch.token_type_ids is not None:
            kw["token_type_ids"] = batch.token_type_ids
        if batch.segments is not None:
            del kw["attention_mask"]  # the segments define the attention (see kernels.segments)
        if self.adapter.causal:
            kw["use_cache"] = False
        return kw

    def run(self, prompts: Prompts, capture: Iterable[Union[str, Site]] = (),
            patch: Optional[Mapping[Union[str, Site], PatchValue]] = None, *, logits: bool = True,
            padding_side: str = "right", grad: bool = False):
        """Run a forward; return `(logits, cache)`.

        capture: site names to record; `cache[name]` is a tensor (shapes in `mechscope.sites`).
        patch:   {site: tensor or function(activation) -> activation} applied during the same forward.
        logits:  False stops the forward right after the deepest captured site (logits is then None).
        The cache also carries `input_ids`, `attention_mask` (True = real token), `position_ids`.
        """
        if isinstance(capture, (str, Site)):
            capture = [capture]
        cap = [self.site(s) for s in capture]
        pat = {self.site(s): v for s, v in (patch or {}).items()}
        batch = self.batch(prompts, padding_side)
        cache = ActivationCache()
        cache.input_ids, cache.attention_mask = batch.input_ids, batch.attention_mask
        cache.position_ids, cache.padding_side = batch.position_ids, batch.padding_side
        stop = None
        if not logits:
            if not cap:
                return None, cache
            if all(s.kind != "module" for s in cap):
                stop = max(cap, key=lambda s: s.order)
        out = None
        with torch.set_grad_enabled(grad), kernels.segments(self.hf, batch.segments), \
                hooks.install(self, cap, pat, cache, stop_after=stop, detach=not grad):
            try:
                out = self.hf(**self.forward_kwargs(batch))
            except hooks.StopForward:
                pass
        # logits: (B, T, V) from a language-model head, (B, n_labels) from a classifier, None from a bare body
        return (getattr(out, "logits", None) if (logits and out is not None) else None), cache

    # ---- reading the residual stream -----------------------------------------------------------------------------
    def unembed(self, resid: torch.Tensor, normalize: bool = True, columns=None) -> torch.Tensor:
        """Logits from a residual-stream tensor (..., d_model): final norm (if the family has one) then unembedding;
        with `columns` (vocabulary ids) only those logits. Applied to the last block's hook_resid_post this gives
        the model's own logits up to float rounding (a separate matmul may round differently: ~1e-5 in fp32)."""
        self.require_lm_head("unembed")
        x = resid.to(self.dtype)
        if normalize and self.adapter.ln_final:
            x = self.module(self.adapter.ln_final)(x)
        head = self.module(self.adapter.unembed)
        if columns is None:
            return head(x)
        if not isinstance(head, torch.nn.Linear):
            return head(x)[..., columns]
        idx = torch.as_tensor(columns, device=x.device)
        bias = head.bias[idx] if head.bias is not None else None
        return torch.nn.functional.linear(x, head.weight[idx], bias)
