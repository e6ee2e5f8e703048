"""Index lists as users type them: '0-5,8,-1' (ranges inclusive, negatives from the end, 'all')."""
from __future__ import annotations

from typing import Optional, Sequence, Union

from .errors import ConfigError


def parse_index_list(text: Optional[Union[str, Sequence[int]]], n: int, argument: str) -> Optional[list[int]]:
    """'0-5,8,-1' (or a list of ints) -> sorted unique indices in [0, n); None, '' and 'all' -> None (all of them).

    A reversed range ('5-2'), an empty list or an index outside [-n, n) is an error naming `argument`: a wrong
    value never silently becomes "all".
    """
    if text is None or (isinstance(text, str) and text.strip() in ("", "all")):
        return None
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    if not parts or any(p == "" for p in parts):
        raise ConfigError(f"{argument}={text!r} has an empty item. Write e.g. '0-5,8' or '-1'.", argument)

    def index(i: int) -> int:
        if not -n <= i < n:
            raise ConfigError(f"{argument}={text!r}: index {i} is out of range; valid indices are 0 to {n - 1} "
                              f"(or -1 to -{n} from the end).", argument)
        return i % n

    out: set = set()
    for part in parts:
        try:
            if isinstance(part, str) and "-" in part[1:]:
                cut = part.index("-", 1)
                a, b = index(int(part[:cut])), index(int(part[cut + 1:]))
                if a > b:
                    raise ConfigError(
                        f"{argument}={text!r}: the range {part!r} is reversed (its start comes after its end), so it "
                        f"selects nothing. Write it as '{part[cut + 1:]}-{part[:cut]}'.", argument)
                out.update(range(a, b + 1))
            else:
                out.add(index(int(part)))
        except ValueError as err:
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(f"{argument}={text!r} is not a list of indices. Write e.g. '0-5,8' or '-1'.",
                              argument) from None
    return sorted(out)
