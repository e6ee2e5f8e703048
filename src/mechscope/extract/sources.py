"""Input readers: every source yields `Record(doc_id, text, skip)` in input order.

A document's id is its index in the input order (0-based), counting every record, skipped ones included, so every
stored row traces back to its text. `skip` names why a record carries no usable text ("empty", "non-UTF-8 text",
"invalid JSON", "missing field 'text'", ...); the pipeline counts those and goes on.

Sources: a Python list of strings, a `.txt` file (one document per line), `.jsonl`, `.parquet`, `.csv`, a folder of
those (files in sorted order, recursively), or a Hugging Face dataset (streamed, never downloaded whole).
"""
from __future__ import annotations

import csv
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

from ..errors import MechscopeError

SUFFIXES = (".txt", ".jsonl", ".parquet", ".csv")


@dataclass
class Record:
    doc_id: int
    text: Optional[str]
    skip: Optional[str] = None


def _check_text(doc_id: int, text, field: str) -> Record:
    if text is None:
        return Record(doc_id, None, f"missing field {field!r}")
    if not isinstance(text, str):
        return Record(doc_id, None, f"field {field!r} is not text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8 (read with surrogateescape)
        return Record(doc_id, None, "non-UTF-8 text")
    if not text.strip():
        return Record(doc_id, None, "empty")
    return Record(doc_id, text)


def _decode(line: bytes) -> Optional[str]:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _open_error(path: Path, err: OSError) -> MechscopeError:
    return MechscopeError(f"Cannot read input {str(path)!r}: {err.strerror or err}. Check the path and its "
                          "permissions.")


class Source:
    """Iterable of Records; `size` is the number of records when cheap to know (for the ETA), else None."""

    kind = "?"

    def describe(self) -> dict:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Record]:
        raise NotImplementedError

    @property
    def size(self) -> Optional[int]:
        return None


class ListSource(Source):
    kind = "list"

    def __init__(self, texts: Sequence[str]):
        self.texts = list(texts)

    def describe(self) -> dict:
        return {"kind": "list", "documents": len(self.texts)}

    @property
    def size(self) -> int:
        return len(self.texts)

    def __iter__(self):
        for i, t in enumerate(self.texts):
            yield _check_text(i, t, "text")


class FileSource(Source):
    """One or several files (a folder is read in sorted path order); doc ids run on across files."""

    kind = "files"

    def __init__(self, path: Union[str, Path], text_field: str = "text"):
        self.path = Path(path).expanduser()
        self.text_field = text_field
        if not self.path.exists():
            raise MechscopeError(f"--input {str(path)!r}: no such file or folder. Check the path.")
        if self.path.is_dir():
            self.files = sorted(p for p in self.path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
                                and not any(part.startswith(".") for part in p.relative_to(self.path).parts))
            if not self.files:
                raise MechscopeError(f"--input {str(path)!r}: the folder holds no {', '.join(SUFFIXES)} files.")
        else:
            if self.path.suffix.lower() not in SUFFIXES:
                raise MechscopeError(f"--input {str(path)!r}: unsupported file type {self.path.suffix!r}. Use "
                                     f"{', '.join(SUFFIXES)}, a folder of them, or --dataset for a Hub dataset.")
            self.files = [self.path]
        for f in self.files:
            if not os.access(f, os.R_OK):
                raise MechscopeError(f"Cannot read input {str(f)!r}: permission denied.")
        for f in self.files:  # check columns up front: a wrong --text-field must stop before any work
            if f.suffix.lower() == ".parquet":
                self._parquet_columns(f)
            elif f.suffix.lower() == ".csv":
                self._csv_header(f)
        self._size: Optional[int] = None

    def describe(self) -> dict:
        return {"kind": "files", "path": str(self.path), "files": [str(f) for f in self.files],
                "text_field": self.text_field}

    @property
    def size(self) -> Optional[int]:
        if self._size is None:
            n = 0
            for f in self.files:
                if f.suffix.lower() == ".parquet":
                    import pyarrow.parquet as pq

                    n += pq.ParquetFile(f).metadata.num_rows
                elif f.suffix.lower() == ".csv":
                    return None
                else:
                    n += _count_lines(f)
            self._size = n
        return self._size

    def _parquet_columns(self, f: Path) -> None:
        import pyarrow.parquet as pq

        try:
            names = pq.ParquetFile(f).schema_arrow.names
        except OSError as err:
            raise _open_error(f, err) from None
        except Exception as err:  # not a parquet file
            raise MechscopeError(f"Cannot read input {str(f)!r} as parquet: {err}") from None
        if self.text_field not in names:
            raise MechscopeError(f"{str(f)!r} has no column {self.text_field!r} (--text-field). Its columns: "
                                 f"{', '.join(names)}.")

    def _csv_header(self, f: Path) -> None:
        with open(f, newline="", encoding="utf-8", errors="surrogateescape") as fh:
            header = next(csv.reader(fh), [])
        if self.text_field not in header:
            raise MechscopeError(f"{str(f)!r} has no column {self.text_field!r} (--text-field). Its header: "
                                 f"{', '.join(header) or '(empty file)'}.")

    def __iter__(self):
        doc = 0
        for f in self.files:
            suffix = f.suffix.lower()
            try:
                if suffix == ".txt":
                    with open(f, "rb") as fh:
                        for line in fh:
                            text = _decode(line.rstrip(b"\n").rstrip(b"\r"))
                            yield Record(doc, None, "non-UTF-8 text") if text is None else _check_text(doc, text, "")
                            doc += 1
                elif suffix == ".jsonl":
                    with open(f, "rb") as fh:
                        for line in fh:
                            if not line.strip():
                                yield Record(doc, None, "empty")
                            else:
                                yield self._json_record(doc, line)
                            doc += 1
                elif suffix == ".csv":
                    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
                    with open(f, newline="", encoding="utf-8", errors="surrogateescape") as fh:
                        for row in csv.DictReader(fh):
                            yield _check_text(doc, row.get(self.text_field), self.text_field)
                            doc += 1
                else:
                    import pyarrow.parquet as pq

                    for batch in pq.ParquetFile(f).iter_batches(columns=[self.text_field], batch_size=1024):
                        for text in batch.column(0).to_pylist():
                            yield _check_text(doc, text, self.text_field)
                            doc += 1
            except OSError as err:
                raise _open_error(f, err) from None

    def _json_record(self, doc: int, line: bytes) -> Record:
        text = _decode(line)
        if text is None:
            return Record(doc, None, "non-UTF-8 text")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            return Record(doc, None, "invalid JSON")
        if not isinstance(obj, dict):
            return Record(doc, None, "JSON line is not an object")
        return _check_text(doc, obj.get(self.text_field), self.text_field)


def _count_lines(f: Path) -> int:
    n, last = 0, b"\n"
    with open(f, "rb") as fh:
        while chunk := fh.read(1 << 22):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


_SLICE = re.compile(r"^(?P<split>[\w.-]+)(?:\[(?P<start>-?[\d_]+%?)?:(?P<stop>-?[\d_]+%?)?\])?$")


class HFSource(Source):
    """A Hugging Face dataset read in streaming mode; `split` may carry a slice: train[:1000], train[:1%], train[-500:].

    Slices follow `datasets`' own split slicing: a percentage is rounded to the closest record, a negative bound
    counts from the end, bounds are clipped to the split. Percentages and negative bounds need the split's size, so
    they work only when the dataset publishes it (its card's `dataset_info`). A document's id is its index in the
    sliced split (0 = the first record of the slice)."""

    kind = "hf"

    def __init__(self, name: str, config: Optional[str] = None, split: str = "train", text_field: str = "text",
                 revision: Optional[str] = None):
        m = _SLICE.match(split.replace(" ", ""))
        if not m:
            raise MechscopeError(f"--split {split!r} is not valid. Use e.g. train, train[:1000], train[:1%] or "
                                 "train[-1000:].")
        self.name, self.config, self.split_spec, self.text_field, self.revision = name, config, split, text_field, \
            revision
        self.split, start, stop = m.group("split"), m.group("start"), m.group("stop")
        self._total: Optional[int] = None
        self._total_known = False
        self.start, self.stop = self._bound(start), self._bound(stop)
        try:
            import datasets

            self.ds = datasets.load_dataset(name, config, split=self.split, streaming=True, revision=revision)
        except Exception as err:  # offline, unknown name, unknown config...
            raise MechscopeError(f"Cannot open the dataset {name!r} (config {config!r}, split {self.split!r}): "
                                 f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. Check the "
                                 "name, --config and --split, and the network (HF_HUB_OFFLINE).") from None
        self._check_column()

    def _bound(self, s: Optional[str]) -> Optional[int]:
        if s is None:
            return None
        pct = s.endswith("%")
        v = int(s.rstrip("%").replace("_", ""))
        if pct and abs(v) > 100:
            raise MechscopeError(f"--split {self.split_spec!r}: a percentage bound must lie between -100% and 100%.")
        if not pct and v >= 0:
            return v
        total = self._num_examples()
        if total is None:
            what = "a percentage" if pct else "a negative bound"
            raise MechscopeError(f"--split {self.split_spec!r}: {what} needs the split's size, which this dataset "
                                 "does not publish. Use an absolute count, e.g. train[:10000].")
        if pct:
            v = int(round(v * total / 100.0))  # `datasets`' "closest" rounding
        return min(max(total + v, 0) if v < 0 else v, total)

    def _num_examples(self) -> Optional[int]:
        if not self._total_known:
            self._total_known = True
            try:
                import datasets

                info = datasets.load_dataset_builder(self.name, self.config, revision=self.revision).info
                n = info.splits[self.split].num_examples if info.splits and self.split in info.splits else None
                self._total = int(n) if n else None  # 0 = not recorded
            except Exception:
                self._total = None
        return self._total

    def _check_column(self) -> None:
        """A wrong --text-field stops here, naming the columns there are (before any work)."""
        names = list(self.ds.column_names or [])
        if not names:  # features not published: look at the first record
            try:
                first = next(iter(self.ds), None)
            except Exception:
                return  # unreadable here: the reading itself will say why
            if not isinstance(first, dict):
                return
            names = list(first)
        if self.text_field not in names:
            raise MechscopeError(f"The dataset {self.name!r} (split {self.split!r}) has no column {self.text_field!r} "
                                 f"(--text-field). Its columns: {', '.join(names) or '(none)'}.")

    def describe(self) -> dict:
        return {"kind": "hf", "dataset": self.name, "config": self.config, "split": self.split_spec,
                "revision": self.revision, "text_field": self.text_field}

    @property
    def size(self) -> Optional[int]:
        """Records in the slice (for the ETA), when the dataset publishes the split's size or the slice is bounded."""
        stop, total = self.stop, self._num_examples()
        if total is not None:
            stop = total if stop is None else min(stop, total)
        if stop is not None:
            return max(0, stop - (self.start or 0))
        return None

    def __iter__(self):
        start, stop = self.start or 0, self.stop
        for i, row in enumerate(self.ds):
            if stop is not None and i >= stop:
                break
            if i >= start:
                yield _check_text(i - start, row.get(self.text_field), self.text_field)


def open_source(input=None, *, dataset: Optional[str] = None, config: Optional[str] = None, split: str = "train",
                text_field: str = "text", revision: Optional[str] = None) -> Source:
    """The Source for `input` (a path or a list of strings) or for a Hub `dataset`."""
    if isinstance(input, Source):
        return input
    if dataset is not None and input is not None:
        raise MechscopeError("Give either --input (a file or folder) or --dataset (a Hub dataset), not both.")
    if dataset is not None:
        return HFSource(dataset, config, split, text_field, revision)
    if input is None:
        raise MechscopeError("No input: pass --input FILE_OR_FOLDER or --dataset NAME.")
    if isinstance(input, (list, tuple)):
        if not all(isinstance(t, str) or t is None for t in input):
            raise MechscopeError("input: a list must hold strings (one document each).")
        return ListSource(input)
    return FileSource(input, text_field)
