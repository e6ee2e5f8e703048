"""Token text helpers used by every command: showing a piece, checking text, one-token answers."""
from __future__ import annotations

import warnings
from typing import Optional, Union

from .errors import MechscopeError


def show_token(piece: str) -> str:
    """A token piece made visible in a table: spaces as '·', newlines and tabs as '\\n' and '\\t'; '∅' if empty."""
    return repr(piece)[1:-1].replace(" ", "·") if piece else "∅"


def require_text(argument: str, value, blank_ok: bool = False) -> str:
    """`value` if it is text with at least one non-space character (with `blank_ok`, any non-empty text: spaces are
    text to a tokenizer); otherwise an error naming `argument`."""
    if value is not None and not isinstance(value, str):
        raise MechscopeError(f"{argument} must be text, not {type(value).__name__} ({value!r}).", argument)
    if not value or (not blank_ok and not value.strip()):
        raise MechscopeError(f"{argument} is empty ({value!r}). Give at least one character of text.", argument)
    return value


def _ids(tokenizer, text: str) -> list:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def single_token_id(tokenizer, text: Union[str, int], argument: str, vocab_size: Optional[int] = None,
                    warn: bool = True, flag: Optional[str] = None) -> int:
    """The id of `text` if it is exactly one token, else an error listing its pieces (and, with `flag`, the
    command-line spelling of the suggested fix).

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
    pieces = " + ".join(repr(tokenizer.decode([int(i)])) for i in ids) or "nothing"
    msg = (f"{argument} {text!r} is not a single token: it is {len(ids)} tokens for this tokenizer ({pieces}; ids "
           f"{', '.join(str(int(i)) for i in ids) or 'none'}). A logit is read for one token, so give exactly one.")
    if spaced is not None and len(spaced) == 1:
        use = f" ({flag} {' ' + text!r})" if flag else ""
        msg += (f" Its variant with a leading space, {' ' + text!r}, is a single token (id {int(spaced[0])}): use "
                f"that{use}.")
    elif text.startswith(" ") and text.strip() and len(_ids(tokenizer, text.strip())) == 1:
        msg += f" Without the leading space, {text.strip()!r} is a single token."
    raise MechscopeError(msg, argument)
