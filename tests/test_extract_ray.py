"""--engine ray on a local Ray instance: the same (document, position) rows, with equal vectors, as the local engine."""
import numpy as np
import pytest

import mechscope
from mechscope import ActivationDataset

from conftest import tiny

pytestmark = pytest.mark.heavy  # Ray

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

DOCS = ["The quick brown fox jumps over the lazy dog.", "", "Hi!", "A longer document, " * 5,
        "Numbers 1 2 3 and symbols #$%.", "Short one.", "x" * 70, "Tail document."]
SITES = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"]


@pytest.fixture(scope="module")
def local_ray():
    # More logical CPUs than actors (2 model actors + 1 tokenizer actor): on a 2-core machine the read stage and the
    # actor pool would otherwise wait on each other.
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def _rows(ds):
    return {(int(d), int(p)): i for i, (d, p) in enumerate(zip(ds.doc_ids, ds.positions))}


def test_ray_engine_matches_local_engine(tmp_path, local_ray):
    m = tiny("llama")
    kw = dict(max_length=48, batch_tokens=96, shard_tokens=96, progress=False)
    local = mechscope.extract(m, SITES, DOCS, tmp_path / "local", **kw)
    distributed = mechscope.extract(m, SITES, DOCS, tmp_path / "ray", engine="ray", num_workers=2, **kw)
    a, b = ActivationDataset(tmp_path / "local"), ActivationDataset(tmp_path / "ray")
    ra, rb = _rows(a), _rows(b)
    assert len(ra) == len(a) and len(rb) == len(b)  # no duplicated rows
    assert set(ra) == set(rb)
    keys = sorted(ra)
    for site in SITES:
        np.testing.assert_allclose(a.read(site, [ra[k] for k in keys]), b.read(site, [rb[k] for k in keys]),
                                   atol=1e-5, rtol=1e-5)
    assert b.manifest["engine"] == "ray" and b.manifest["counts"]["shards"] >= 2
    for key in ("tokens", "documents", "records", "skipped", "truncated"):
        assert local[key] == distributed[key], key
    assert not (tmp_path / "ray" / ".ray-model").exists()
    # a retried / resumed run skips finished blocks and never duplicates rows
    again = mechscope.extract(m, SITES, DOCS, tmp_path / "ray", engine="ray", resume=True, **kw)
    assert again["already_finished"] and again["tokens"] == len(b)


def _columns(out):
    from mechscope.extract import storage

    cols = {}
    for i in storage.complete_shards(out):
        batch, _ = storage.open_shard(out / storage.DATA / storage.shard_name(i))
        cols[i] = [storage.column_values(batch, c).copy() for c in ("token_id", "doc_id", "position")]
    return cols


def _packed_rows(ds):
    """Packed rows keyed by (document, k): the k-th token of that document in the token stream (its position in
    the context repeats when a document spans several contexts)."""
    seen: dict = {}
    rows = {}
    for i, d in enumerate(ds.doc_ids.tolist()):
        k = seen.get(d, 0)
        seen[d] = k + 1
        rows[(d, k)] = i
    return rows


def test_ray_engine_packed_matches_local_engine(tmp_path, local_ray):
    """Packed mode: the same chunks (shard by shard), rows, token ids, vectors and counters as the local engine,
    a document split across contexts and shards, and skipped records after the last chunk; then a resume that
    redoes only the missing shards (a hole in the middle and the last one)."""
    from mechscope.extract import storage

    m = tiny("llama")
    max_length, per_shard = 40, 80
    stream = sum(len(m.encode(d)) + 1 for d in DOCS if d.strip())  # + EOS per document
    filler = "y" * (-(stream + 2) % per_shard)  # makes the last chunk close exactly at the end of the last text
    docs = DOCS + [filler, "", "   "]
    assert (stream + len(m.encode(filler)) + 1) % per_shard == 0
    kw = dict(mode="packed", max_length=max_length, batch_tokens=80, shard_tokens=per_shard, progress=False)
    local = mechscope.extract(m, SITES, docs, tmp_path / "local", **kw)
    distributed = mechscope.extract(m, SITES, docs, tmp_path / "ray", engine="ray", num_workers=2, **kw)
    a, b = ActivationDataset(tmp_path / "local"), ActivationDataset(tmp_path / "ray")
    assert b.manifest["engine"] == "ray" and b.manifest["mode"] == "packed"
    for key in ("tokens", "documents", "records", "skipped", "truncated", "shards"):
        assert local[key] == distributed[key], key
    assert local["skipped"] == {"empty": 3} and local["records"] == len(docs) and local["truncated"] == 0
    assert a.manifest["counts"] == b.manifest["counts"]
    ca, cb = _columns(tmp_path / "local"), _columns(tmp_path / "ray")
    assert sorted(ca) == sorted(cb) == list(range(local["shards"])) and len(ca) >= 3
    for i in ca:  # the same chunks: shard i holds the same (token, document, position) rows on both engines
        for x, y in zip(ca[i], cb[i]):
            np.testing.assert_array_equal(x, y)
    ra, rb = _packed_rows(a), _packed_rows(b)
    assert len(ra) == len(a) == len(rb) == len(b) == local["tokens"]  # no duplicated rows
    assert set(ra) == set(rb)
    keys = sorted(ra)
    ia, ib = [ra[k] for k in keys], [rb[k] for k in keys]
    np.testing.assert_array_equal(a.token_ids[ia], b.token_ids[ib])
    np.testing.assert_array_equal(a.positions[ia], b.positions[ib])
    assert len({(int(d), int(p)) for d, p in zip(a.doc_ids, a.positions)}) < len(a)  # a document spans contexts
    for site in SITES:
        np.testing.assert_allclose(a.read(site, ia), b.read(site, ib), atol=1e-5, rtol=1e-5)
    assert {d: b.document_text(d) for d in np.unique(b.doc_ids).tolist()} == \
        {d: docs[d] for d in np.unique(a.doc_ids).tolist()}
    assert not (tmp_path / "ray" / ".ray-model").exists() and not (tmp_path / "ray" / ".ray-tokenizer").exists()

    # an interrupted run: shards 1 and the last one missing, no manifest. --resume redoes only those two.
    out = tmp_path / "ray"
    last = local["shards"] - 1
    before = {i: (out / storage.DATA / storage.shard_name(i)).read_bytes() for i in range(last + 1)}
    for name in ("manifest.json", "README.md"):
        (out / name).unlink()
    import shutil

    shutil.rmtree(out / storage.ARRAYS)
    for i in (1, last):
        (out / storage.DATA / storage.shard_name(i)).unlink()
    kept = {i: (out / storage.DATA / storage.shard_name(i)).stat().st_mtime_ns for i in range(last) if i != 1}
    again = mechscope.extract(m, SITES, docs, out, engine="ray", num_workers=2, resume=True, **kw)
    assert not again["already_finished"]
    for key in ("tokens", "documents", "records", "skipped", "truncated", "shards"):
        assert again[key] == local[key], key
    assert {i: (out / storage.DATA / storage.shard_name(i)).stat().st_mtime_ns for i in kept} == kept
    assert {i: (out / storage.DATA / storage.shard_name(i)).read_bytes() for i in range(last + 1)} == before
    c = ActivationDataset(out)
    assert len(c) == len(a) and c.manifest["counts"] == a.manifest["counts"]
    # a corpus with no tokens at all: the same clear error as the local engine, with the counters of the pass
    with pytest.raises(mechscope.MechscopeError, match=r"no tokens to extract \(3 record\(s\) read; skipped: 3 empty"):
        mechscope.extract(m, SITES, ["", "  ", ""], tmp_path / "none", engine="ray", **kw)
    assert not (tmp_path / "none").exists()
