"""What `mechscope tokenize` shows: the tokens a model reads for a text."""
from __future__ import annotations

from .tokens import require_text


def tokenize_table(model, text: str) -> list[dict]:
    """One row per token the model reads for `text` (special tokens such as BOS included): {position, id, token
    (its decoded text), piece (the raw vocabulary entry)}, the token-row schema of the patching results too."""
    ids = model.tokenizer(require_text("text", text, blank_ok=True))["input_ids"]
    raw = model.tokenizer.convert_ids_to_tokens(ids)
    return [{"position": i, "id": int(t), "token": model.tokenizer.decode([int(t)]), "piece": r}
            for i, (t, r) in enumerate(zip(ids, raw))]
