"""Load a student's forward from `FILE.py:FUNCTION` for `mechscope lab compare`."""
from __future__ import annotations

import importlib.util
import inspect
import sys
import traceback
from pathlib import Path

from ..errors import MechscopeError


class Student:
    """A student's FUNCTION(input_ids, record[, model]); `bind(model)` gives the two-argument form compare calls.
    An exception inside it becomes one MechscopeError naming the student's file and line."""

    def __init__(self, fn, spec: str):
        self.fn, self.spec = fn, spec
        try:
            n_params = len(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            n_params = 2
        self.wants_model = n_params >= 3

    def bind(self, model):
        def call(input_ids, record):
            args = (input_ids, record, model) if self.wants_model else (input_ids, record)
            try:
                return self.fn(*args)
            except MechscopeError:
                raise
            except Exception as err:
                raise MechscopeError(f"--student {self.spec} raised {type(err).__name__}: {err} "
                                     f"({_where(err, self.fn)}). Fix your forward and run again.",
                                     argument="student") from None
        return call


def _where(err: Exception, fn) -> str:
    """'at FILE line N: code' for the deepest frame of the student's own file."""
    own = inspect.getsourcefile(fn)
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == own] or \
        traceback.extract_tb(err.__traceback__)[-1:]
    f = frames[-1]
    return f"at {Path(f.filename).name} line {f.lineno}: {f.line}"


def load_student(spec: str) -> Student:
    """'my_gpt.py:forward' -> Student wrapping that function."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise MechscopeError(f"--student {spec!r} is not FILE.py:FUNCTION. Write e.g. --student my_gpt.py:forward.",
                             argument="student")
    file = Path(path).expanduser()
    if not file.is_file():
        raise MechscopeError(f"--student {spec!r}: no file {str(file)!r}. Give the path of your .py file.",
                             argument="student")
    mod_spec = importlib.util.spec_from_file_location(f"mechscope_student_{file.stem}", file)
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[mod_spec.name] = module  # dataclasses and pickling look their module up here
    try:
        mod_spec.loader.exec_module(module)
    except Exception as err:
        raise MechscopeError(f"--student {spec!r}: importing {file.name} failed with {type(err).__name__}: {err}. "
                             "Fix the file and run again.", argument="student") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise MechscopeError(f"--student {spec!r}: {file.name} has no function {name!r}. Functions it defines: "
                             f"{', '.join(names) or 'none'}.", argument="student")
    return Student(fn, spec)
