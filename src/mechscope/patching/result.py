"""`PatchResult`: a patching sweep's outcome as plain data (saving: `report.save_result`; plotting: `plot.plot_heatmap`).

Vocabulary (one name each): `kind` is the short site kind swept (resid_post, z...; a full site name is
`blocks.{L}.hook_resid_post`), `answers` are the metric's tokens A and B, `tokens` / `corrupt_tokens` are the
prompts' tokens ({position, id, token} rows). Top-k rows are {rank, id, token, logit, prob}, as in `next-token`.
"""
from __future__ import annotations

import csv
import io
import warnings
from dataclasses import dataclass, field
from typing import Optional, Union

import torch

from ..version import __version__

RESULT_FIELDS = ("model", "clean", "corrupt", "tokens", "corrupt_tokens", "answers", "kind", "metric", "direction",
                 "method", "layers", "positions", "columns", "matrix", "clean_value", "corrupt_value", "raw",
                 "seconds", "mechscope_version")


@dataclass
class PatchResult:
    """A layers x columns matrix of patched metric values (columns: positions, or heads for kind `z`).

    matrix[i][j]: the metric of the patched run when layer `layers[i]` at column `columns[j]` is patched (denoise:
    the clean activation into the corrupted run; noise: the corrupted one into the clean run). With metric
    `normalized`, `raw` keeps the logit differences themselves ({clean_value, corrupt_value, matrix}).
    """
    model: str
    clean: Union[str, list]
    corrupt: Union[str, list]
    tokens: list                 # [{position, id, token}] of the clean prompt
    answers: list                # [{role, token, id}]: A and B
    kind: str
    metric: str
    direction: str
    method: str
    layers: list
    positions: list              # columns (position kinds) or the patched positions (z)
    matrix: list
    clean_value: float
    corrupt_value: float
    seconds: float
    mechscope_version: str = __version__
    corrupt_tokens: list = field(default_factory=list)   # [{position, id, token}] of the corrupted prompt
    columns: list = field(default_factory=list)          # column labels: positions, or heads for z
    clean_top: list = field(default_factory=list)        # top-20 next tokens [{rank, id, token, logit, prob}]
    corrupt_top: list = field(default_factory=list)
    verify: list = field(default_factory=list)           # [{layer, column, attribution, exact}]
    verify_correlation: Optional[float] = None           # Pearson r over the `verify` cells only
    verify_scope: str = ""                               # which cells that correlation covers, in words
    raw: Optional[dict] = None                           # metric normalized: the raw logit differences
    warnings: list = field(default_factory=list)         # things the user should know (printed by the CLI)
    command: str = ""
    pairs: list = field(default_factory=list)            # per-pair results of a spec (the mean's components)

    @property
    def site(self) -> str:
        """Deprecated name of `kind`."""
        warnings.warn("PatchResult.site is now PatchResult.kind", DeprecationWarning, stacklevel=2)
        return self.kind

    @property
    def metric_tokens(self) -> list:
        """Deprecated name of `answers`."""
        warnings.warn("PatchResult.metric_tokens is now PatchResult.answers", DeprecationWarning, stacklevel=2)
        return self.answers

    @property
    def column_kind(self) -> str:
        return "head" if self.kind == "z" else "position"

    def first_answers(self) -> list:
        """The answer rows (of the first pair, for a spec's mean)."""
        return self.answers if not self.answers or isinstance(self.answers[0], dict) else self.answers[0]

    def tensor(self) -> torch.Tensor:
        return torch.tensor(self.matrix, dtype=torch.float32)

    def to_json(self) -> dict:
        """The result.json object: exactly the documented fields."""
        return {k: getattr(self, k) for k in RESULT_FIELDS}

    def column_label(self, j: int) -> str:
        c = self.columns[j]
        if self.kind == "z":
            return f"H{c}"
        tok = self.tokens[c]["token"] if c < len(self.tokens) else ""
        if self.corrupt_tokens and c < len(self.corrupt_tokens) and self.corrupt_tokens[c]["id"] != self.tokens[c]["id"]:
            tok = f"{tok}/{self.corrupt_tokens[c]['token']}"
        return f"{c}: {tok}"

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["layer", self.column_kind, "token", "value"])
        for i, L in enumerate(self.layers):
            for j, c in enumerate(self.columns):
                tok = "" if self.kind == "z" else self.tokens[c]["token"]
                w.writerow([L, c, tok, repr(float(self.matrix[i][j]))])
        return buf.getvalue()
