"""User-facing errors: one clear paragraph that names the argument, the value and the fix.

Every error mechscope raises for bad input is a `MechscopeError` (a `ValueError`, so `except ValueError` keeps
working). The subclasses exist for callers that react differently:

  SiteError      a site name that does not exist on this model, or a layer out of range
  DataError      a file or dataset that is missing, truncated, corrupt or of the wrong kind
  ConfigError    a setting that is out of range, inconsistent, or differs from the run being resumed
  ResourceError  the machine ran out of something (memory, disk, a device)

`argument` names the Python argument at fault (e.g. "layers"); the CLI maps it onto its flag (`--layers`).
A Ctrl-C is never turned into one of these: it stays a KeyboardInterrupt.
"""
from __future__ import annotations

import difflib
from typing import Iterable, Optional


class MechscopeError(ValueError):
    """Bad input from the user. The CLI prints the message and exits with code 2 (no traceback)."""

    def __init__(self, message: str, argument: Optional[str] = None):
        super().__init__(message)
        self.argument = argument

def flag_name(argument: Optional[str]) -> Optional[str]:
    """The CLI spelling of a library argument name: 'max_new_tokens' -> '--max-new-tokens'; 'PROMPT' and
    '--clean' stay as they are."""
    if not argument:
        return None
    if argument.startswith("-") or argument.isupper():
        return argument
    return "--" + argument.replace("_", "-")


class SiteError(MechscopeError):
    """An unknown site, a site this family does not have, or a layer out of range."""


class DataError(MechscopeError):
    """Input data (a model folder, a dataset, an SAE, a file) is missing, truncated, corrupt or of the wrong kind."""


class ConfigError(MechscopeError):
    """A setting is out of range or inconsistent, or differs from the run being resumed."""


class ResourceError(MechscopeError):
    """Out of memory, disk space or devices."""


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
