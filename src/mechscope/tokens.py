"""Token text helpers used by every command: showing a piece, checking text, one-token answers."""
from __future__ import annotations

import warnings
from typing import Optional, Union

from .errors import MechscopeError


def show_token(piece: str) -> str:
    """A token piece made visible in a table: spaces as '·', newlines and tabs as '\\n' and '\\t'; '∅' if empty."""
    return repr(piece)[1:-1].replace(" ", "·") if piece else "∅"


def require_text(argument: str, value) -> str:
    """`value` if it holds at least one non-space character; otherwise an error naming `argument`."""
    if value is None or not str(value).strip():
        raise MechscopeError(f"{argument} is empty ({value!r}). Give at least one character of text.", argument)
    return value


def _ids(tokenizer, text: str) -> list:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def single_token_id(tokenizer, text: Union[str, int], argument: str, vocab_size: Optional[int] = None,
                    warn: bool = True) -> int:
    """The id of `text` if it is exactly one token, else an error listing its pieces.

    When `text` has no leading space but its spaced variant is also one token (the usual form after a word),
    a UserWarning says so, with both ids; the warning goes to Python's `warnings` (the CLI prints it).
    """
    if isinstance(text, int):
        if vocab_size is not None and not 0 <= text < vocab_size:
            raise MechscopeError(f"{argument}: token id {text} is out of range (vocabulary of {vocab_size}).",
                                 argument)
        return text
    if not isinstance(text, str) or text == "":
        raise MechscopeError(f"{argument} is empty. Give the text of one token, e.g. ' Paris' (with its space).",
                             argument)
    ids = _ids(tokenizer, text)
    spaced = None if text.startswith(" ") else _ids(tokenizer, " " + text)
    if len(ids) == 1:
        if warn and spaced is not None and len(spaced) == 1:
            warnings.warn(
                f"{argument} {text!r} (id {ids[0]}) has no leading space; after a word the model usually predicts "
                f"{' ' + text!r} (id {spaced[0]}). Pass {' ' + text!r} if that is what you meant.", UserWarning,
                stacklevel=2)
        return int(ids[0])
    pieces = ", ".join(f"{int(i)}={tokenizer.decode([int(i)])!r}" for i in ids) or "none"
    msg = (f"{argument} {text!r} is not a single token: it tokenizes into {len(ids)} pieces ({pieces}). "
           "A logit is read for one token, so give exactly one.")
    if spaced is not None and len(spaced) == 1:
        msg += f" Its variant with a leading space, {' ' + text!r}, is a single token (id {int(spaced[0])}): use that."
    elif text.startswith(" ") and text.strip() and len(_ids(tokenizer, text.strip())) == 1:
        msg += f" Without the leading space, {text.strip()!r} is a single token."
    raise MechscopeError(msg, argument)
