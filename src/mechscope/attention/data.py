"""Attention patterns of chosen layers and heads for one text (or a BERT sentence pair), on real tokens only."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch

from ..errors import ConfigError
from ..hooks import Batch
from ..indices import parse_index_list
from ..sites import short_name
from ..tokens import require_text

Indices = Optional[Union[str, Sequence[int]]]


@dataclass
class AttentionPatterns:
    """What the viewer shows. `patterns[L]` is (len(heads), T, T) float32, (query position, key position)."""
    model: str
    text: str
    pair: Optional[str]
    ids: list
    pieces: list
    segments: list          # per token: 0 for TEXT, 1 for the --pair sentence (BERT token types)
    layers: list
    heads: list
    n_heads: int            # heads of each layer in the model (heads shown: `heads`)
    causal: bool
    patterns: dict = field(repr=False)

    @staticmethod
    def site(layer: int) -> str:
        return short_name("pattern", layer)

    def tokens_json(self) -> dict:
        return {"model": self.model, "text": self.text, "pair": self.pair, "ids": self.ids, "pieces": self.pieces,
                "segments": self.segments, "layers": self.layers, "heads": self.heads, "causal": self.causal}


def _pair_batch(model, text: str, pair: str) -> Batch:
    """[CLS] text [SEP] pair [SEP] with its token types, as the tokenizer builds it."""
    if model.adapter.causal:
        raise ConfigError(f"--pair gives an encoder a sentence pair ([CLS] A [SEP] B [SEP], token types 0 and 1); "
                          f"{model.name} is a causal {model.cfg.family} model, which reads one text. Put both "
                          "sentences in TEXT instead.", "pair")
    enc = model.tokenizer(text, pair, return_token_type_ids=True)
    ids = torch.tensor([enc["input_ids"]])  # (1, T)
    types = torch.tensor([enc.get("token_type_ids") or [0] * ids.shape[1]])  # (1, T)
    if model.cfg.n_ctx and ids.shape[1] > model.cfg.n_ctx:
        raise ConfigError(f"TEXT and --pair are {ids.shape[1]} tokens together; {model.name} reads at most "
                          f"{model.cfg.n_ctx} (n_ctx). Shorten them.", "pair")
    dev = model.device
    return Batch(ids.to(dev), torch.ones_like(ids, dtype=torch.bool).to(dev),
                 torch.arange(ids.shape[1])[None].to(dev), "right", token_type_ids=types.to(dev))


def attention_patterns(model, text: str, layers: Indices = None, heads: Indices = None,
                       pair: Optional[str] = None) -> AttentionPatterns:
    """The attention probabilities (blocks.L.attn.hook_pattern) of `layers` x `heads` on `text` ('0-5,20', a list
    of ints, or None for all). Only the layers asked for compute their attention explicitly."""
    require_text("TEXT", text)
    if pair is not None:
        require_text("--pair", pair)
    c = model.cfg
    layer_ids = parse_index_list(layers, c.n_layers, "layers") or list(range(c.n_layers))
    head_ids = parse_index_list(heads, c.n_heads, "heads") or list(range(c.n_heads))
    batch = model.batch(text) if pair is None else _pair_batch(model, text, pair)
    names = [short_name("pattern", L) for L in layer_ids]
    _, cache = model.run(batch, capture=names, logits=False)
    real = batch.attention_mask[0]  # one sequence: no padding, but never show any
    sel = torch.tensor(head_ids, device=real.device)
    patterns = {L: cache[n][0].index_select(0, sel)[:, real][:, :, real].float().cpu().contiguous()
                for L, n in zip(layer_ids, names)}  # (heads, T, T)
    ids = [int(i) for i in batch.input_ids[0][real]]
    types = batch.token_type_ids[0][real] if batch.token_type_ids is not None else torch.zeros(len(ids))
    return AttentionPatterns(model=model.name, text=text, pair=pair, ids=ids, pieces=model.to_str_tokens(ids),
                             segments=[int(t) for t in types], layers=layer_ids, heads=head_ids, n_heads=c.n_heads,
                             causal=model.adapter.causal, patterns=patterns)
