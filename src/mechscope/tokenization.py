"""What `mechscope tokenize` shows: the tokens a model reads for a text."""
from __future__ import annotations

from .tokens import require_text


def token_rows(model, ids) -> list[dict]:
    """One row {position, id, token (its decoded text)} per token id: the token-row schema of every output."""
    return [{"position": i, "id": int(t), "token": model.tokenizer.decode([int(t)])} for i, t in enumerate(ids)]


def tokenize_table(model, text: str) -> list[dict]:
    """One row per token the model reads for `text` (special tokens such as BOS included): `token_rows` plus
    piece (the raw vocabulary entry)."""
    ids = model.tokenizer(require_text("text", text, blank_ok=True))["input_ids"]
    rows = token_rows(model, ids)
    for row, piece in zip(rows, model.tokenizer.convert_ids_to_tokens(ids)):
        row["piece"] = piece
    return rows
