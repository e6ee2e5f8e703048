"""Atomic file writes: every output file is written under a temporary name beside its target, then renamed.

A reader (or a crash, or a Ctrl-C) therefore sees either the old file or the complete new one, never half a file.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Union

from .errors import ResourceError
from .jsonsafe import json_safe

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def disk_error(path: Path, err: OSError, hint: str = "") -> ResourceError:
    """An OSError while writing `path`, as one paragraph; `hint` says what the caller's user can do next."""
    import errno

    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        msg = (f"The disk is full while writing {str(path)!r}. Nothing half-written was kept. Free some space or "
               "choose another output folder.")
    else:
        msg = (f"Cannot write {str(path)!r}: {err.strerror or err}. Nothing half-written was kept; check the "
               "folder's permissions and the disk.")
    return ResourceError(msg + (f" {hint}" if hint else ""))


def _unlink(p) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def atomic_write(path: Union[str, Path], write: Callable[[object], None], binary: bool = True, hint: str = "") -> Path:
    """Write through `write(fileobj)` to a temporary file beside `path`, fsync, rename over `path`.

    An OSError becomes a ResourceError (`disk_error`, with `hint`); nothing is left at `path` or beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        _unlink(tmp)
        raise disk_error(path, err, hint) from None
    except BaseException:
        _unlink(tmp)
        raise
    return path


def write_bytes(path: Union[str, Path], data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data))


def write_text(path: Union[str, Path], text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text), binary=False)


def write_json(path: Union[str, Path], obj, indent: int = 2) -> Path:
    """Strict JSON (NaN -> null, infinities -> null) through `json_safe`, written atomically."""
    text = json.dumps(json_safe(obj), indent=indent, ensure_ascii=False, allow_nan=False) + "\n"
    return write_text(path, text)


def save_figure(fig, path: Union[str, Path], **kw) -> Path:
    """A matplotlib figure saved atomically (PNG unless the suffix says otherwise)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return atomic_write(path, lambda fh: fig.savefig(fh, format=fmt, **kw))
