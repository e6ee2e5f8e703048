"""User-facing errors: one clear paragraph that names the argument, the value and the fix."""
from __future__ import annotations

import difflib
from typing import Iterable


class MechscopeError(ValueError):
    """Bad input from the user. The CLI prints the message and exits with code 2 (no traceback)."""


def closest(value: str, choices: Iterable[str], n: int = 5) -> list[str]:
    """The valid names closest to `value`, best first."""
    choices = list(choices)
    found = difflib.get_close_matches(value, choices, n=n, cutoff=0.5)
    if not found:  # fall back on shared prefixes so the user always sees a few valid names
        head = value.split(".")[0]
        found = [c for c in choices if c.startswith(head)][:n] or choices[:n]
    return found


def suggest(value: str, choices: Iterable[str], n: int = 5) -> str:
    return "Closest valid names: " + ", ".join(closest(value, choices, n)) + "."
