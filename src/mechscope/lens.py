"""The logit lens: read every block's output residual stream through the model's own final norm and unembedding.

`logit_lens(model, prompt, target=None)` runs one forward that captures `blocks.{L}.hook_resid_post` for every layer
(stopping after the last block; no logits are computed by the model itself), applies `model.unembed` layer by
layer and keeps, per layer and position, the top token and its probability, and optionally a target token's
probability and rank. Applied to the last block the lens is exactly the model's next-token distribution.
`plot_lens(result, path)` draws the heatmap.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Union

import torch

from . import tokens


@dataclass
class LensResult:
    prompt: str
    token_ids: list[int]              # (T,) tokens the model read
    tokens: list[str]                 # (T,) their text pieces
    layers: list[int]                 # (L,) block indices, 0 .. n_layers-1
    top_ids: list[list[int]]          # (L, T) most likely next token per layer and position
    top_tokens: list[list[str]]       # (L, T)
    top_probs: list[list[float]]      # (L, T) its probability
    target: Optional[str] = None
    target_id: Optional[int] = None
    target_probs: Optional[list[list[float]]] = None  # (L, T) probability of the target token
    target_ranks: Optional[list[list[int]]] = None    # (L, T) its rank, 1 = top
    png: Optional[str] = None

    def to_dict(self) -> dict:
        return asdict(self)


def single_token_id(model, target: str) -> int:
    """The id of `target` if it is exactly one token (`tokens.single_token_id`, argument "target")."""
    vocab_size = getattr(getattr(model, "cfg", None), "d_vocab", None)  # a bare tokenizer holder has no cfg
    return tokens.single_token_id(model.tokenizer, target, "target", vocab_size, flag="--target")


def lens_layer_logits(model, resid: torch.Tensor) -> torch.Tensor:
    """Logits (T, V) as float32 from one layer's residual stream (T, d_model)."""
    with torch.no_grad():
        return model.unembed(resid).float()


def logit_lens(model, prompt: str, target: Optional[str] = None) -> LensResult:
    """Top token (and probability) per layer and position, plus the target's probability and rank if given."""
    tokens.require_text("prompt", prompt, blank_ok=True)
    model.require_lm_head("The logit lens")
    target_id = single_token_id(model, target) if target is not None else None
    n_layers = model.cfg.n_layers
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(n_layers)]
    _, cache = model.run(prompt, capture=names, logits=False)
    ids = cache.input_ids[0].tolist()  # (T,)
    top_ids, top_probs, t_probs, t_ranks = [], [], [], []
    for name in names:
        logits = lens_layer_logits(model, cache[name][0])  # (T, d_model) -> (T, V)
        probs = torch.softmax(logits, dim=-1)  # (T, V)
        p, i = probs.max(dim=-1)  # (T,), (T,)
        top_ids.append(i.tolist())
        top_probs.append(p.tolist())
        if target_id is not None:
            pt = probs[:, target_id]  # (T,)
            t_probs.append(pt.tolist())
            t_ranks.append(((probs > pt[:, None]).sum(dim=-1) + 1).tolist())  # (T,) 1 = top
    decode = model.tokenizer.decode
    vocab: dict[int, str] = {}
    top_tokens = [[vocab.setdefault(i, decode([i])) for i in row] for row in top_ids]
    return LensResult(
        prompt=prompt, token_ids=ids, tokens=[decode([i]) for i in ids], layers=list(range(n_layers)),
        top_ids=top_ids, top_tokens=top_tokens, top_probs=top_probs, target=target, target_id=target_id,
        target_probs=t_probs if target_id is not None else None,
        target_ranks=t_ranks if target_id is not None else None,
    )


def _label(piece: str, width: int = 8) -> str:
    """A token piece made visible and safe for matplotlib (no mathtext): spaces as '·', '$' escaped."""
    text = tokens.show_token(piece)
    if len(text) > width:
        text = text[: width - 1] + "…"
    return text.replace("$", r"\$")


def plot_lens(result: LensResult, path: Union[str, Path]) -> Path:
    """Heatmap: layers on y (0 at the bottom), positions on x labelled by token; colour = top-token probability
    (or the target's probability when the result has a target); cell text = the top token."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.array(result.target_probs if result.target_probs is not None else result.top_probs)  # (L, T)
    n_layers, n_pos = values.shape
    width = min(60.0, max(6.0, 0.8 * n_pos + 2.5))
    height = min(40.0, max(4.0, 0.32 * n_layers + 2.0))
    fig, ax = plt.subplots(figsize=(width, height))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # missing glyphs for some token pieces
            im = ax.imshow(values, aspect="auto", origin="lower", cmap="viridis", vmin=0.0, vmax=1.0,
                           interpolation="nearest")
            if n_pos * n_layers <= 4000:
                size = 7 if n_pos <= 30 else 5
                for layer in range(n_layers):
                    for pos in range(n_pos):
                        ax.text(pos, layer, _label(result.top_tokens[layer][pos], 6), ha="center", va="center",
                                fontsize=size, color="white" if values[layer, pos] < 0.5 else "black")
            ax.set_xticks(range(n_pos))
            ax.set_xticklabels([_label(t, 10) for t in result.tokens], rotation=60, ha="right", fontsize=8)
            step = max(1, n_layers // 30)
            ax.set_yticks(range(0, n_layers, step))
            ax.set_yticklabels([str(result.layers[i]) for i in range(0, n_layers, step)], fontsize=8)
            ax.set_xlabel("position (input token)")
            ax.set_ylabel("layer (blocks.L.hook_resid_post)")
            what = (f"P(target {result.target!r})".replace("$", r"\$") if result.target_probs is not None
                    else "probability of the top token")
            fig.colorbar(im, ax=ax, label=what)
            ax.set_title(f"Logit lens — {what}; cell text = top next token", fontsize=10)
            fig.tight_layout()
            fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path
