"""`--dataset` (a Hugging Face dataset, streamed) through the same code path as a Hub dataset, offline: a local
folder of jsonl / parquet files that `datasets.load_dataset(folder, split=..., streaming=True)` opens. Split slices
(absolute, negative, percentages when the card publishes the split size) pick the same records as `datasets`' own
slicing; the stored rows are those of the same texts given as a .jsonl --input; --text-field; clear errors."""
import json

import numpy as np
import pytest

import mechscope
from mechscope import ActivationDataset, MechscopeError
from mechscope.extract.sources import open_source

from conftest import tiny

datasets = pytest.importorskip("datasets")

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hi!",
    "A longer document, " * 4 + "which ends here.",
    "Numbers 1 2 3 4 5 and symbols #$%&.",
    "",                                   # skipped ("empty"), but it keeps its doc id
    "Short one.",
    "Medium length text about models and activations.",
    "x" * 60,
    "Streaming datasets are read record by record.",
    "Eleven.",
    "The eleventh document of the split.",
    "Twelve and last.",
]
N = len(TEXTS)
SITES = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"]
KW = dict(max_length=32, batch_tokens=64, shard_tokens=48, progress=False)
CARD = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: "part-*.jsonl"
dataset_info:
  features:
  - name: text
    dtype: string
  - name: id
    dtype: int64
  splits:
  - name: train
    num_bytes: {num_bytes}
    num_examples: {n}
---
# A local test corpus
"""


def _write_jsonl(path, rows):
    with open(path, "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """plain/: two jsonl files, no card (no published size). meta/: the same files with a card that publishes the
    split size. body/: one parquet file whose text column is `body`. ref.jsonl: all texts, one --input file."""
    root = tmp_path_factory.mktemp("hub")
    rows = [{"text": t, "id": i} for i, t in enumerate(TEXTS)]
    for name in ("plain", "meta"):
        (root / name).mkdir()
        _write_jsonl(root / name / "part-00000.jsonl", rows[:5])  # input order: files in sorted order
        _write_jsonl(root / name / "part-00001.jsonl", rows[5:])
    size = sum((root / "meta" / f).stat().st_size for f in ("part-00000.jsonl", "part-00001.jsonl"))
    (root / "meta" / "README.md").write_text(CARD.format(num_bytes=size, n=N))
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "body").mkdir()
    pq.write_table(pa.table({"id": list(range(N)), "body": TEXTS}), root / "body" / "train-00000.parquet")
    return root


def _ref(tmp_path, texts, name="ref.jsonl"):
    path = tmp_path / name
    _write_jsonl(path, [{"text": t} for t in texts])
    return path


def _same_rows(a: ActivationDataset, b: ActivationDataset) -> None:
    assert len(a) == len(b) > 0
    np.testing.assert_array_equal(a.doc_ids, b.doc_ids)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.token_ids, b.token_ids)
    for site in SITES:
        np.testing.assert_allclose(a.read(site, range(len(a))), b.read(site, range(len(b))), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("split", ["train", "train[:7]", "train[5:]", "train[3:9]", "train[-4:]", "train[:-9]",
                                   "train[:50%]", "train[:30%]", "train[25%:75%]", "train[-25%:]", "train[:1_0]",
                                   "train[:100]"])
def test_split_slices_match_datasets_slicing(corpus, tmp_path, split):
    """The records of a slice (streamed) are those `datasets` gives for the same split string (non-streaming)."""
    want = datasets.load_dataset(str(corpus / "plain"), split=split, cache_dir=str(tmp_path / "cache"))["text"]
    src = open_source(dataset=str(corpus / "meta"), split=split)
    recs = list(src)
    assert [r.doc_id for r in recs] == list(range(len(want)))  # doc id = index in the sliced split
    assert [r.text if r.text is not None else "" for r in recs] == want
    assert src.size == len(want)


def test_percentage_slice_extracts_the_right_documents(corpus, tmp_path):
    m = tiny("llama")
    s = mechscope.extract(m, SITES, dataset=str(corpus / "meta"), split="train[:50%]", out=tmp_path / "hf", **KW)
    half = TEXTS[: N // 2]
    assert s["records"] == N // 2 and s["skipped"] == {"empty": 1} and s["documents"] == N // 2 - 1
    ds = ActivationDataset(tmp_path / "hf")
    assert sorted(set(ds.doc_ids.tolist())) == [i for i, t in enumerate(half) if t.strip()]
    for d in set(ds.doc_ids.tolist()):
        assert ds.document_text(d) == TEXTS[d]
        assert np.array_equal(ds.token_ids[ds.doc_ids == d], m.encode(TEXTS[d])[:32])
    assert ds.manifest["input"] == {"kind": "hf", "dataset": str(corpus / "meta"), "config": None,
                                    "split": "train[:50%]", "revision": None, "text_field": "text"}
    ref = mechscope.extract(m, SITES, _ref(tmp_path, half), tmp_path / "ref", **KW)
    assert {k: ref[k] for k in ("records", "documents", "tokens", "skipped", "truncated", "shards")} == \
        {k: s[k] for k in ("records", "documents", "tokens", "skipped", "truncated", "shards")}
    _same_rows(ds, ActivationDataset(tmp_path / "ref"))

    # a slice that starts later: doc ids count from the slice's first record
    s = mechscope.extract(m, SITES, dataset=str(corpus / "meta"), split="train[25%:75%]", out=tmp_path / "mid",
                          **KW)
    mid = TEXTS[3:9]
    assert s["records"] == len(mid)
    mechscope.extract(m, SITES, _ref(tmp_path, mid, "mid.jsonl"), tmp_path / "midref", **KW)
    ds = ActivationDataset(tmp_path / "mid")
    _same_rows(ds, ActivationDataset(tmp_path / "midref"))
    assert ds.document_text(0) == TEXTS[3]


def test_without_published_size_percentage_is_refused_absolute_slice_works(corpus, tmp_path):
    m = tiny("llama")
    for split, what in (("train[:50%]", "a percentage"), ("train[-3:]", "a negative bound")):
        with pytest.raises(MechscopeError, match=f"{what} needs the split's size.*absolute count"):
            mechscope.extract(m, SITES, dataset=str(corpus / "plain"), split=split, out=tmp_path / "o", **KW)
        assert not (tmp_path / "o").exists()
    s = mechscope.extract(m, SITES, dataset=str(corpus / "plain"), split="train[:7]", out=tmp_path / "seven", **KW)
    assert s["records"] == 7 and s["skipped"] == {"empty": 1}
    ds = ActivationDataset(tmp_path / "seven")
    assert sorted(set(ds.doc_ids.tolist())) == [0, 1, 2, 3, 5, 6]
    mechscope.extract(m, SITES, _ref(tmp_path, TEXTS[:7]), tmp_path / "ref", **KW)
    _same_rows(ds, ActivationDataset(tmp_path / "ref"))
    # --limit-docs on a streamed split reads only the first N records
    s = mechscope.extract(m, SITES, dataset=str(corpus / "plain"), out=tmp_path / "lim", limit_docs=3, **KW)
    assert s["records"] == 3 and sorted(set(ActivationDataset(tmp_path / "lim").doc_ids.tolist())) == [0, 1, 2]


def test_text_field_and_missing_column(corpus, tmp_path):
    m = tiny("llama")
    with pytest.raises(MechscopeError, match=r"no column 'text' \(--text-field\)\. Its columns: id, body"):
        mechscope.extract(m, SITES, dataset=str(corpus / "body"), out=tmp_path / "o", **KW)
    assert not (tmp_path / "o").exists()
    with pytest.raises(MechscopeError, match=r"no column 'body' \(--text-field\)\. Its columns: text, id"):
        mechscope.extract(m, SITES, dataset=str(corpus / "plain"), text_field="body", out=tmp_path / "o", **KW)
    s = mechscope.extract(m, SITES, dataset=str(corpus / "body"), text_field="body", split="train[2:10]",
                          out=tmp_path / "body", **KW)
    assert s["records"] == 8
    mechscope.extract(m, SITES, _ref(tmp_path, TEXTS[2:10]), tmp_path / "ref", **KW)
    _same_rows(ActivationDataset(tmp_path / "body"), ActivationDataset(tmp_path / "ref"))


def test_bad_split_and_dataset(corpus, tmp_path):
    with pytest.raises(MechscopeError, match="is not valid"):
        open_source(dataset=str(corpus / "meta"), split="train[5]")
    with pytest.raises(MechscopeError, match="between -100% and 100%"):
        open_source(dataset=str(corpus / "meta"), split="train[:150%]")
    with pytest.raises(MechscopeError, match="Cannot open the dataset.*split 'test'"):
        open_source(dataset=str(corpus / "meta"), split="test")
    with pytest.raises(MechscopeError, match="Cannot open the dataset"):
        open_source(dataset=str(tmp_path / "no-such-folder"))
    with pytest.raises(MechscopeError, match="either --input .* or --dataset"):
        open_source(str(corpus / "plain" / "part-00000.jsonl"), dataset=str(corpus / "meta"))


def test_cli_dataset_split_and_text_field(corpus, tmp_path):
    from click.testing import CliRunner

    from mechscope.cli import main

    model_dir = mechscope.save(tiny("gpt2"), tmp_path / "m")
    base = ["extract", "-m", str(model_dir), "--device", "cpu", "--sites", SITES[0], "--max-length", "32",
            "--batch-tokens", "64", "--shard-tokens", "48"]
    r = CliRunner().invoke(main, base + ["--dataset", str(corpus / "meta"), "--split", "train[:50%]", "--out",
                                         str(tmp_path / "hf"), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["records"] == N // 2 and s["skipped"] == {"empty": 1}
    r = CliRunner().invoke(main, base + ["--input", str(_ref(tmp_path, TEXTS[: N // 2])), "--out",
                                         str(tmp_path / "ref"), "--json"])
    assert r.exit_code == 0, r.output
    a, b = ActivationDataset(tmp_path / "hf"), ActivationDataset(tmp_path / "ref")
    assert len(a) == len(b) == s["tokens"]
    np.testing.assert_array_equal(a.doc_ids, b.doc_ids)
    np.testing.assert_array_equal(a.token_ids, b.token_ids)
    np.testing.assert_allclose(a.read(SITES[0], range(len(a))), b.read(SITES[0], range(len(b))), atol=1e-6)

    r = CliRunner().invoke(main, base + ["--dataset", str(corpus / "body"), "--text-field", "body", "--split",
                                         "train[:7]", "--out", str(tmp_path / "body"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["records"] == 7
    assert sorted(set(ActivationDataset(tmp_path / "body").doc_ids.tolist())) == [0, 1, 2, 3, 5, 6]

    r = CliRunner().invoke(main, base + ["--dataset", str(corpus / "body"), "--out", str(tmp_path / "bad")])
    assert r.exit_code == 2 and "no column 'text'" in r.output and "id, body" in r.output
    assert not (tmp_path / "bad").exists()
    r = CliRunner().invoke(main, base + ["--dataset", str(corpus / "plain"), "--split", "train[:10%]", "--out",
                                         str(tmp_path / "bad")])
    assert r.exit_code == 2 and "needs the split's size" in r.output
