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
from typing import Optional, Union

from ..errors import DataError

SUFFIXES = (".csv", ".jsonl", ".parquet")


@dataclass
class LabeledTexts:
    texts: list[str]
    labels: list[int]             # index into label_names
    label_names: list[str]        # sorted (numerically when every label is an integer)
    path: str = ""
    columns: list[str] = field(default_factory=list)
    splits: Optional[list[str]] = None  # the split field's values, when one was asked for

    def __len__(self) -> int:
        return len(self.texts)


def _bad(path: Path, what: str, argument: str = "data") -> DataError:
    return DataError(f"{str(path)!r}: {what}", argument=argument)


def _rows(path: Path, fields: dict):
    """(columns, [(row number, [value of each field])]) for the file; `fields` maps field name -> argument name.
    Raises DataError on what cannot be read."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except Exception as err:
            raise _bad(path, f"cannot be read as parquet ({err}).") from None
        cols = pf.schema_arrow.names
        _check_fields(path, cols, fields)
        table = pf.read(columns=list(fields))
        values = zip(*(table.column(j).to_pylist() for j in range(len(fields))))
        return cols, [(i + 1, list(v)) for i, v in enumerate(values)]
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
        _check_fields(path, cols, fields)
        return cols, [(reader.line_num, [r.get(f) for f in fields]) for r in reader]
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
            _check_fields(path, cols, fields)
        rows.append((i, [obj.get(f) for f in fields]))
    return cols, rows


def _check_fields(path: Path, cols: list, fields: dict) -> None:
    for name, flag in fields.items():
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
                 split_field: Optional[str] = None, argument: str = "data") -> LabeledTexts:
    """Read a .csv/.jsonl/.parquet file of labeled texts. Labels may be strings or integers; at least two.
    With `split_field`, that column's values are kept too (`splits`, e.g. "train"/"test")."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{str(path)!r}: no such file. Check the path.", argument=argument)
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(f"{str(path)!r}: unsupported file type {path.suffix or '(none)'!r}. Use "
                        f"{', '.join(SUFFIXES)}.", argument=argument)
    fields = {text_field: "text_field", label_field: "label_field"}
    if split_field:
        fields[split_field] = "split_field"
    cols, rows = _rows(path, fields)
    if not rows:
        raise _bad(path, "the file has a header but no rows.", argument)
    texts, raw = [], []
    for line, (text, label, *_) in rows:
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
    splits = [str(v[2]) for _, v in rows] if split_field else None
    return LabeledTexts(texts, [index[r] for r in raw], names, str(path), [str(c) for c in cols], splits)
