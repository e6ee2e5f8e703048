"""Labeled text files (csv, jsonl, parquet) read into texts, integer labels and the label names.

One reader for every command that takes `--data`/`--train FILE --text-field --label-field`. Bad input stops
here, before any model is loaded: a missing field names the columns the file has; an empty file, a row without
text or label, a non-UTF-8 row, or a single label each get their own message.
"""
from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from ..errors import DataError

SUFFIXES = (".csv", ".jsonl", ".parquet")


@dataclass
class LabeledTexts:
    texts: list[str]
    labels: list[int]             # index into label_names
    label_names: list[str]        # sorted (numerically when every label is an integer)
    path: str = ""
    columns: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)


def _bad(path: Path, what: str, argument: str = "data") -> DataError:
    return DataError(f"{str(path)!r}: {what}", argument=argument)


def _rows(path: Path, text_field: str, label_field: str):
    """(columns, [(row number, text, label)]) for the file; raises DataError on what cannot be read."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except Exception as err:
            raise _bad(path, f"cannot be read as parquet ({err}).") from None
        cols = pf.schema_arrow.names
        _check_fields(path, cols, text_field, label_field)
        table = pf.read(columns=[text_field, label_field])
        pairs = zip(table.column(0).to_pylist(), table.column(1).to_pylist())
        return cols, [(i + 1, t, lab) for i, (t, lab) in enumerate(pairs)]
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise _bad(path, f"line {line} is not UTF-8 text (byte {err.start}). Re-save the file as UTF-8.") from None
    if not text.strip():
        raise _bad(path, "the file is empty. Give a file with a header (csv) or one JSON object per line (jsonl).")
    if suffix == ".csv":
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
        reader = csv.DictReader(io.StringIO(text, newline=""))
        cols = list(reader.fieldnames or [])
        _check_fields(path, cols, text_field, label_field)
        return cols, [(reader.line_num, r.get(text_field), r.get(label_field)) for r in reader]
    rows, cols = [], []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise _bad(path, f"line {i} is not JSON ({err.msg}). Write one JSON object per line.") from None
        if not isinstance(obj, dict):
            raise _bad(path, f"line {i} is a JSON {type(obj).__name__}, not an object with named fields.")
        if not cols:
            cols = list(obj)
            _check_fields(path, cols, text_field, label_field)
        rows.append((i, obj.get(text_field), obj.get(label_field)))
    return cols, rows


def _check_fields(path: Path, cols: list, text_field: str, label_field: str) -> None:
    for name, flag in ((text_field, "text_field"), (label_field, "label_field")):
        if name not in cols:
            raise _bad(path, f"there is no field {name!r} (--{flag.replace('_', '-')}). Its fields: "
                             f"{', '.join(map(str, cols)) or '(none)'}.", argument=flag)


def _label_names(values: list) -> list[str]:
    names = sorted({str(v) for v in values})
    try:
        return sorted(names, key=lambda s: int(s))
    except ValueError:
        return names


def read_labeled(path: Union[str, Path], text_field: str = "text", label_field: str = "label",
                 argument: str = "data") -> LabeledTexts:
    """Read a .csv/.jsonl/.parquet file of labeled texts. Labels may be strings or integers; at least two."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{str(path)!r}: no such file. Check the path.", argument=argument)
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(f"{str(path)!r}: unsupported file type {path.suffix or '(none)'!r}. Use "
                        f"{', '.join(SUFFIXES)}.", argument=argument)
    cols, rows = _rows(path, text_field, label_field)
    if not rows:
        raise _bad(path, "the file has a header but no rows.", argument)
    texts, raw = [], []
    for line, text, label in rows:
        if not isinstance(text, str) or not text.strip():
            raise _bad(path, f"row at line {line} has no text in {text_field!r} ({text!r}). Remove the row or fill "
                             "it in.", "text_field")
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        if label is None or (isinstance(label, str) and not label.strip()) or isinstance(label, float):
            raise _bad(path, f"row at line {line} has no usable label in {label_field!r} ({label!r}). Labels are "
                             "strings or integers.", "label_field")
        texts.append(text)
        raw.append(str(label).strip())
    names = _label_names(raw)
    if len(names) < 2:
        raise _bad(path, f"every row has the same label {names[0]!r} in {label_field!r}: a classifier or probe "
                         "needs at least two labels. Check --label-field.", "label_field")
    index = {n: i for i, n in enumerate(names)}
    return LabeledTexts(texts, [index[r] for r in raw], names, str(path), [str(c) for c in cols])
