"""Reading labeled files: csv, jsonl and parquet give the same texts and labels; bad input names the problem."""
import json

import pytest

from mechscope.data import read_labeled
from mechscope.errors import DataError

ROWS = [{"text": "good, \"really\"", "label": "pos", "id": 1}, {"text": "bad\nday", "label": "neg", "id": 2},
        {"text": "fine", "label": "pos", "id": 3}]


def _write(tmp_path, kind, rows=ROWS):
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / f"d.{kind}"
    if kind == "csv":
        with open(p, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    elif kind == "jsonl":
        p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        pq.write_table(pa.Table.from_pylist(rows), p)
    return p


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_formats_agree(tmp_path, kind):
    d = read_labeled(_write(tmp_path, kind))
    assert d.texts == [r["text"] for r in ROWS]
    assert d.label_names == ["neg", "pos"] and d.labels == [1, 0, 1]
    ints = read_labeled(_write(tmp_path, kind, [{"text": "a", "label": 10}, {"text": "b", "label": 9}]))
    assert ints.label_names == ["9", "10"] and ints.labels == [1, 0]  # numeric order, not string order


def test_bad_input_messages(tmp_path):
    with pytest.raises(DataError, match=r"no field 'sentence'.*Its fields: text, label, id"):
        read_labeled(_write(tmp_path, "jsonl"), text_field="sentence")
    with pytest.raises(DataError, match=r"no field 'y'.*text, label, id") as e:
        read_labeled(_write(tmp_path, "parquet"), label_field="y")
    assert e.value.argument == "label_field"
    with pytest.raises(DataError, match="same label"):
        read_labeled(_write(tmp_path, "csv", [{"text": "a", "label": "x"}, {"text": "b", "label": "x"}]))
    (tmp_path / "e.csv").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        read_labeled(tmp_path / "e.csv")
    (tmp_path / "b.csv").write_bytes(b"text,label\nok,1\n\xff\xfe,0\n")
    with pytest.raises(DataError, match="line 3 is not UTF-8"):
        read_labeled(tmp_path / "b.csv")
    (tmp_path / "m.csv").write_text("text,label\nok,1\n,0\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 3 has no text"):
        read_labeled(tmp_path / "m.csv")
    with pytest.raises(DataError, match="no such file"):
        read_labeled(tmp_path / "missing.csv")


def test_split_field(tmp_path):
    rows = [dict(r, split=s) for r, s in zip(ROWS, ["train", "test", "train"])]
    d = read_labeled(_write(tmp_path, "jsonl", rows), split_field="split")
    assert d.splits == ["train", "test", "train"] and d.labels == [1, 0, 1]
    with pytest.raises(DataError, match="no field 'fold'") as e:
        read_labeled(_write(tmp_path, "csv", rows), split_field="fold")
    assert e.value.argument == "split_field"
