"""Corpus -> activation dataset (issue 4): exactness against a plain per-document HF forward, storage and reader,
resume after SIGKILL, bad input, fp16 overflow counting, Hub-unreachable error."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import mechscope
from mechscope import ActivationDataset, MechscopeError
from mechscope.extract import storage

from conftest import tiny

DOCS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hi!",
    "",
    "A much longer document, " * 6 + "which ends here.",
    "   ",
    "Short one.",
    "Numbers 1 2 3 4 5 6 7 8 9 and symbols #$%&.",
    "x" * 90,
    "Medium length text about models and activations.",
]
RESID, MLP = "blocks.0.hook_resid_post", "blocks.2.hook_mlp_out"


def hf_reference(m, ids: list) -> dict:
    """Plain HF forward of one unpadded sequence: hidden_states for resid_post, a forward hook for mlp_out."""
    got = {}
    h = m.hf.model.layers[2].mlp.register_forward_hook(lambda mod, a, o: got.__setitem__("mlp", o.detach()))
    try:
        with torch.no_grad():
            out = m.hf(input_ids=torch.tensor([ids]), output_hidden_states=True, use_cache=False)
    finally:
        h.remove()
    return {RESID: out.hidden_states[1][0].float().numpy(), MLP: got["mlp"][0].float().numpy()}


@pytest.fixture(scope="module")
def llama_ds(tmp_path_factory):
    out = tmp_path_factory.mktemp("x") / "acts"
    summary = mechscope.extract(tiny("llama"), [RESID, MLP], DOCS, out, max_length=40, batch_tokens=64,
                                shard_tokens=60, progress=False)
    return out, summary


def test_document_mode_rows_equal_plain_hf_forward(llama_ds):
    out, summary = llama_ds
    m = tiny("llama")
    ds = ActivationDataset(out)
    long = sum(len(m.encode(d)) > 40 for d in DOCS if d.strip())
    assert summary["skipped"] == {"empty": 2} and summary["truncated"] == long >= 2 and summary["shards"] > 2
    n = 0
    for doc, text in enumerate(DOCS):
        if not text.strip():
            assert not (ds.doc_ids == doc).any()
            continue
        ids = m.encode(text)[:40]
        rows = np.flatnonzero(ds.doc_ids == doc)
        assert len(rows) == len(ids)  # every real token, never a pad
        assert np.array_equal(ds.positions[rows], np.arange(len(ids)))
        assert np.array_equal(ds.token_ids[rows], ids)
        ref = hf_reference(m, ids)
        for site in (RESID, MLP):
            np.testing.assert_allclose(ds.read(site, rows), ref[site], atol=2e-5, rtol=1e-5)
        assert ds.document_text(doc) == text
        n += len(ids)
    assert len(ds) == n == summary["tokens"]
    mf = ds.manifest
    assert mf["sites"] == [RESID, MLP] and mf["d"] == {RESID: 64, MLP: 64} and mf["dtype"] == "float32"
    assert mf["counts"]["documents"] == 7 and mf["counts"]["records"] == len(DOCS)
    for key in ("model", "tokenizer", "max_length", "mode", "exclude_bos", "mechscope_version", "started_at",
                "finished_at"):
        assert key in mf


def test_reader_api(llama_ds):
    out, _ = llama_ds
    ds = ActivationDataset(out)
    a = ds.array(MLP)
    assert isinstance(a, np.memmap) or isinstance(a.base, np.memmap) or not a.flags.owndata
    assert a.shape == (len(ds), ds.d(MLP)) and a.dtype == np.float32 and ds.dtype_of(MLP) == "float32"
    rows = np.random.default_rng(0).integers(0, len(ds), 25)
    np.testing.assert_array_equal(ds.read(MLP, rows), a[rows])
    np.testing.assert_array_equal(ds.read(MLP, [-1]), a[-1:])
    row = ds[5]
    assert row["doc_id"] == ds.doc_ids[5] and row["position"] == ds.positions[5]
    np.testing.assert_array_equal(row[RESID], ds.array(RESID)[5])
    seen = np.concatenate([b.numpy() for b in ds.batches(MLP, 16, shuffle=True, seed=1, block_rows=20,
                                                         buffer_blocks=2)])
    assert seen.shape == a.shape and not np.array_equal(seen, a)
    order = np.lexsort(seen.T[::-1])
    np.testing.assert_array_equal(seen[order], np.asarray(a)[np.lexsort(np.asarray(a).T[::-1])])
    assert all(isinstance(b, torch.Tensor) and b.dtype == torch.float32 for b in ds.batches(MLP, 50, shuffle=False))
    ids, center = ds.context(3, window=2, return_center=True)
    assert ids[center] == ds.token_ids[3] and len(ids) == 5
    assert (ds.context(0, 3) == ds.token_ids[:4]).all()  # clipped at the document start
    # the same rows through the memory-mapped Arrow shards (a copy without the consolidated arrays)
    import shutil

    copy = out.parent / "no-arrays"
    if not copy.exists():
        shutil.copytree(out, copy, ignore=shutil.ignore_patterns("arrays"))
    shards = ActivationDataset(copy)
    np.testing.assert_array_equal(shards.read(MLP, rows), a[rows])
    np.testing.assert_array_equal(shards.doc_ids, ds.doc_ids)
    with pytest.warns(UserWarning, match="concatenates"):
        np.testing.assert_array_equal(shards.array(MLP), a)
    with pytest.raises(MechscopeError, match="not in this dataset"):
        ds.d("blocks.9.hook_mlp_out")


def test_load_dataset_reads_the_shards(llama_ds):
    import datasets

    out, _ = llama_ds
    ds = ActivationDataset(out)
    hf = datasets.load_dataset(str(out), split="train")
    assert len(hf) == len(ds) and set(hf.column_names) == {"token_id", "doc_id", "position", RESID, MLP}
    hf.set_format("numpy")
    np.testing.assert_array_equal(np.stack(hf[MLP]), ds.array(MLP))
    np.testing.assert_array_equal(hf["doc_id"], ds.doc_ids)
    docs = datasets.load_dataset(str(out), "documents", split="train")
    assert set(docs["doc_id"]) == set(int(d) for d in np.unique(ds.doc_ids))


def test_bf16_bits_and_exclude_bos(tmp_path):
    m = tiny("llama")
    out = tmp_path / "bf16"
    mechscope.extract(m, [MLP], DOCS[:2], out, store_dtype="bf16", exclude_bos=True, progress=False)
    ds = ActivationDataset(out)
    assert ds.dtype_of(MLP) == "bfloat16" and ds.array(MLP).dtype == np.uint16
    bos = m.tokenizer.bos_token_id
    assert bos is not None and not (ds.token_ids == bos).any() and ds.positions.min() == 1
    for doc in (0, 1):
        ids = m.encode(DOCS[doc])
        ref = torch.from_numpy(hf_reference(m, ids)[MLP][1:]).to(torch.bfloat16).float().numpy()
        got = ds.read(MLP, np.flatnonzero(ds.doc_ids == doc))
        np.testing.assert_allclose(got, ref, rtol=2 ** -7, atol=1e-6)  # one bf16 ulp (batched vs alone)
    bits = torch.from_numpy(ds.array(MLP)[:3].astype(np.int16)).view(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(bits, ds.read(MLP, range(3)))


def test_packed_mode_exact(tmp_path):
    m = tiny("gpt2")
    docs = [d for d in DOCS if d.strip()]
    out = tmp_path / "packed"
    s = mechscope.extract(m, ["blocks.1.hook_resid_post"], docs, out, mode="packed", max_length=32,
                          batch_tokens=64, shard_tokens=64, progress=False)
    ds = ActivationDataset(out)
    eos = m.tokenizer.eos_token_id
    stream, owner = [], []
    for i, d in enumerate(docs):
        ids = m.encode(d) + [eos]
        stream += ids
        owner += [i] * len(ids)
    assert len(ds) == len(stream) == s["tokens"]
    np.testing.assert_array_equal(ds.token_ids, stream)
    np.testing.assert_array_equal(ds.doc_ids, owner)
    for start in range(0, len(stream), 32):
        ctx = stream[start: start + 32]
        with torch.no_grad():
            hs = m.hf(input_ids=torch.tensor([ctx]), output_hidden_states=True).hidden_states[2][0].numpy()
        rows = np.arange(start, start + len(ctx))
        np.testing.assert_array_equal(ds.positions[rows], np.arange(len(ctx)))
        np.testing.assert_allclose(ds.read("blocks.1.hook_resid_post", rows), hs, atol=2e-5, rtol=1e-5)


def _cli(args, **kw):
    code = "import sys; from mechscope.cli import main; sys.exit(main())"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _tree(out: Path) -> dict:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "manifest.json" and p.name != "run.json"}


@pytest.mark.heavy
def test_resume_after_sigkill_is_byte_identical(tmp_path):
    model_dir = mechscope.save(tiny("llama"), tmp_path / "model")
    corpus = tmp_path / "corpus.jsonl"
    rng = np.random.default_rng(0)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    with open(corpus, "w") as fh:
        for i in range(400):
            fh.write(json.dumps({"text": " ".join(rng.choice(words, rng.integers(2, 25)))}) + "\n")
    args = ["extract", "-m", str(model_dir), "--sites", f"{RESID},{MLP}", "--input", str(corpus), "--max-length",
            "64", "--batch-tokens", "256", "--shard-tokens", "400", "--no-progress", "--device", "cpu"]
    full, part = tmp_path / "full", tmp_path / "part"
    p = _cli(args + ["--out", str(full)])
    killed = _cli(args + ["--out", str(part)])
    deadline = time.time() + 120
    while len(storage.complete_shards(part)) < 3 and time.time() < deadline and killed.poll() is None:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert p.wait(timeout=180) == 0, p.stderr.read()
    n_done = len(storage.complete_shards(part))
    assert 0 < n_done < len(storage.complete_shards(full)), "the kill did not land mid-run"
    assert not (part / "manifest.json").exists()
    with pytest.raises(MechscopeError, match="unfinished"):
        ActivationDataset(part)
    again = _cli(args + ["--out", str(part)])  # without --resume: refused, nothing touched
    assert again.wait(timeout=120) == 2 and "--resume" in again.stderr.read()
    resumed = _cli(args + ["--out", str(part), "--resume", "--json"])
    assert resumed.wait(timeout=180) == 0, resumed.stderr.read()
    assert _tree(part) == _tree(full)
    mf_full, mf_part = (json.loads((d / "manifest.json").read_text()) for d in (full, part))
    for mf in (mf_full, mf_part):
        mf.pop("started_at"), mf.pop("finished_at")
    assert mf_full == mf_part


def test_existing_output_and_resume_rules(tmp_path, llama_ds):
    out, _ = llama_ds
    m = tiny("llama")
    with pytest.raises(MechscopeError, match="already holds a finished"):
        mechscope.extract(m, [MLP], DOCS, out, progress=False)
    same = dict(max_length=40, batch_tokens=64, shard_tokens=60, progress=False)  # the settings of llama_ds
    again = mechscope.extract(m, [RESID, MLP], DOCS, out, resume=True, **same)
    assert again["already_finished"] and again["tokens"] == len(ActivationDataset(out))
    with pytest.raises(MechscopeError, match=r"sites: \['blocks.0.hook_resid_post', 'blocks.2.hook_mlp_out'\] before"):
        mechscope.extract(m, [MLP], DOCS, out, resume=True, **same)  # issue 10 item 2: refused, not "complete"
    fresh = mechscope.extract(m, [MLP], DOCS[:2], tmp_path / "missing", resume=True, progress=False)
    assert fresh["documents"] == 2  # --resume on a missing folder simply starts
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(MechscopeError, match="not a mechscope activation dataset"):
        mechscope.extract(m, [MLP], DOCS, tmp_path / "junk", progress=False)


def test_bad_input(tmp_path):
    m = tiny("llama")
    with pytest.raises(MechscopeError, match="no such file"):
        mechscope.extract(m, [MLP], tmp_path / "nope.jsonl", tmp_path / "o1", progress=False)
    with pytest.raises(MechscopeError, match="Unknown site"):
        mechscope.extract(m, ["blocks.0.hook_mlp_outt"], DOCS, tmp_path / "o2", progress=False)
    assert not (tmp_path / "o2").exists()
    with pytest.raises(MechscopeError, match="no tokens to extract"):
        mechscope.extract(m, [MLP], ["", "  ", "\n"], tmp_path / "o3", progress=False)
    assert not (tmp_path / "o3").exists()  # never a half-written dataset
    raw = tmp_path / "mixed.txt"
    raw.write_bytes(b"good line one\n\xff\xfe broken bytes\n\nsecond good line\n")
    s = mechscope.extract(m, [MLP], raw, tmp_path / "o4", progress=False)
    assert s["skipped"] == {"non-UTF-8 text": 1, "empty": 1} and s["documents"] == 2
    assert sorted(set(ActivationDataset(tmp_path / "o4").doc_ids.tolist())) == [0, 3]
    jl = tmp_path / "bad.jsonl"
    jl.write_text('{"text": "fine"}\nnot json\n{"body": "no text field"}\n')
    s = mechscope.extract(m, [MLP], jl, tmp_path / "o5", progress=False)
    assert s["skipped"] == {"invalid JSON": 1, "missing field 'text'": 1}
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["a", "b"]}), tmp_path / "t.parquet")
    with pytest.raises(MechscopeError, match="no column 'text'"):
        mechscope.extract(m, [MLP], tmp_path / "t.parquet", tmp_path / "o6", progress=False)
    s = mechscope.extract(m, [MLP], tmp_path / "t.parquet", tmp_path / "o7", text_field="body", progress=False)
    assert s["documents"] == 2
    with pytest.raises(MechscopeError, match="exceeds the model's context"):
        mechscope.extract(m, [MLP], DOCS, tmp_path / "o8", max_length=10_000, progress=False)
    with pytest.raises(MechscopeError, match="attention pattern"):
        mechscope.extract(m, ["blocks.0.attn.hook_pattern"], DOCS, tmp_path / "o9", progress=False)


@pytest.mark.parametrize("mode", ["document", "packed"])
def test_disk_full_keeps_complete_shards_then_resumes(tmp_path, monkeypatch, mode):
    m = tiny("llama")
    real = storage.write_arrow
    calls = {"n": 0}

    def flaky(path, table):
        if path.parent.name == storage.DATA:
            calls["n"] += 1
            if calls["n"] == 3:
                def boom(fh):
                    fh.write(b"half a shard")
                    raise OSError(errno.ENOSPC, "No space left on device")

                return storage.atomic_write(path, boom)
        return real(path, table)

    monkeypatch.setattr(storage, "write_arrow", flaky)
    out = tmp_path / "full"
    kw = dict(max_length=40, batch_tokens=64, shard_tokens=60, mode=mode, progress=False)
    with pytest.raises(MechscopeError, match="disk is full"):
        mechscope.extract(m, [MLP], DOCS, out, **kw)
    assert storage.complete_shards(out) == [0, 1] and not (out / "manifest.json").exists()
    assert not list(out.rglob("*.tmp"))
    monkeypatch.setattr(storage, "write_arrow", real)
    s = mechscope.extract(m, [MLP], DOCS, out, resume=True, **kw)
    ref = mechscope.extract(m, [MLP], DOCS, tmp_path / "ref", **kw)
    assert s["tokens"] == ref["tokens"] and _tree(out) == _tree(tmp_path / "ref")


def test_fp16_overflow_is_counted(tmp_path):
    from mechscope.tiny import tiny_hf

    hf, tok = tiny_hf("llama", seed=1)
    with torch.no_grad():
        hf.model.layers[0].mlp.down_proj.weight.mul_(1e5)  # finite fp16 weights, MLP output beyond fp16's range
    m = mechscope.Model(hf.half(), tok, name="tiny-llama-fp16")
    s = mechscope.extract(m, [RESID], DOCS[:2], tmp_path / "fp16", progress=False)
    assert s["dtype"] == "float16" and s["nonfinite"][RESID] > 0
    assert any("bf16" in w for w in s["warnings"])
    assert ActivationDataset(tmp_path / "fp16").manifest["counts"]["nonfinite"][RESID] == s["nonfinite"][RESID]


def test_push_to_hub_unreachable_fails_before_any_work(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    out = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MechscopeError, match="cannot be reached.*Nothing was extracted"):
        mechscope.extract("no/such-model-anywhere", [MLP], DOCS, out, push_to_hub="me/acts", progress=False)
    assert not out.exists()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hc, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_never_printed")
    with pytest.raises(MechscopeError, match="cannot be reached") as err:
        mechscope.extract("no/such-model-anywhere", [MLP], DOCS, out, push_to_hub="me/acts", progress=False)
    assert "hf_secret" not in str(err.value) and not out.exists()


def test_cli_extract_json(tmp_path):
    from click.testing import CliRunner

    from mechscope.cli import main

    corpus = tmp_path / "c.txt"
    corpus.write_text("one document\nanother document here\n")
    model_dir = mechscope.save(tiny("gpt2"), tmp_path / "m")
    r = CliRunner().invoke(main, ["extract", "-m", str(model_dir), "--sites", "blocks.0.hook_resid_post",
                                  "--input", str(corpus), "--out", str(tmp_path / "o"), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["documents"] == 2 and s["tokens"] == len("one document") + len("another document here")
    r = CliRunner().invoke(main, ["extract", "-m", str(model_dir), "--sites", "blocks.0.hook_resid_post",
                                  "--input", str(corpus), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "already holds" in r.output


@pytest.mark.slow
def test_embedded_model_matches_hf(default_model, tmp_path):
    m = default_model
    docs = ["The capital of France is Paris.", "Activation datasets store one row per real token, never a pad."]
    site = "blocks.15.hook_mlp_out"
    mechscope.extract(m, [site], docs, tmp_path / "e", max_length=256, progress=False)
    ds = ActivationDataset(tmp_path / "e")
    for doc, text in enumerate(docs):
        ids = m.encode(text)
        got = {}
        h = m.hf.model.layers[15].mlp.register_forward_hook(lambda mod, a, o: got.__setitem__("x", o))
        try:
            with torch.no_grad():
                m.hf(input_ids=torch.tensor([ids], device=m.device), use_cache=False)
        finally:
            h.remove()
        rows = np.flatnonzero(ds.doc_ids == doc)
        np.testing.assert_allclose(ds.read(site, rows), got["x"][0].float().cpu().numpy(), atol=1e-4, rtol=1e-4)


def test_folder_of_mixed_files_keeps_input_order(tmp_path):
    from mechscope.extract.sources import open_source

    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("first\nsecond\n")
    (folder / "b.csv").write_text('id,text\n1,"third, with a comma"\n2,\n')
    (folder / "sub" / "c.jsonl").write_text('{"text": "fourth"}\n')
    (folder / "notes.md").write_text("ignored")
    recs = list(open_source(folder))
    assert [(r.doc_id, r.text, r.skip) for r in recs] == [
        (0, "first", None), (1, "second", None), (2, "third, with a comma", None), (3, None, "empty"),
        (4, "fourth", None)]
    s = mechscope.extract(tiny("gpt2"), ["blocks.0.hook_resid_post"], folder, tmp_path / "o", limit_docs=3,
                          progress=False)
    ds = ActivationDataset(tmp_path / "o")
    assert s["records"] == 3 and sorted(set(ds.doc_ids.tolist())) == [0, 1, 2]
    assert ds.document_text(2) == "third, with a comma"


def test_push_uploads_folder_with_card(llama_ds, tmp_path, monkeypatch):
    """The upload path against a stand-in for huggingface_hub.HfApi (no network in tests)."""
    import shutil

    from mechscope.extract.hub import HubTarget

    out = tmp_path / "copy"
    shutil.copytree(llama_ds[0], out)
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw))
            return f"https://hf.example/datasets/{repo_id}"

        def upload_folder(self, **kw):
            calls.append(("upload_folder", kw))

    hub = HubTarget("me/acts", private=True, token="hf_x")
    monkeypatch.setattr(hub, "_api", lambda: FakeApi())
    url = hub.push(out, ActivationDataset(out).manifest)
    assert url.endswith("me/acts")
    assert calls[0][0] == "create_repo" and calls[0][2]["repo_type"] == "dataset" and calls[0][2]["private"]
    assert calls[1][1]["folder_path"] == str(out) and calls[1][1]["repo_type"] == "dataset"
    card = (out / "README.md").read_text()
    assert 'load_dataset("me/acts")' in card and "data/*.arrow" in card and RESID in card


def test_load_dataset_never_serves_another_folder_of_the_same_name(tmp_path):
    """`datasets` caches a local folder under a hash of its card's configs; each card carries its own fingerprint,
    so two different extractions into folders named `acts` load as themselves."""
    import datasets

    m = tiny("llama")
    for sub, docs in (("a", DOCS[:3]), ("b", DOCS[5:])):
        mechscope.extract(m, [MLP], docs, tmp_path / sub / "acts", max_length=40, progress=False)
    for sub in ("a", "b"):
        hf = datasets.load_dataset(str(tmp_path / sub / "acts"), split="train")
        ds = ActivationDataset(tmp_path / sub / "acts")
        assert len(hf) == len(ds)
        np.testing.assert_array_equal(np.asarray(hf["token_id"]), ds.token_ids)
    fps = {json.loads((tmp_path / s / "acts" / "manifest.json").read_text())["fingerprint"] for s in "ab"}
    assert len(fps) == 2


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_packed_rows_and_padded_batches_store_the_same_rows(family):
    """The CPU path (packed rows) and the GPU path (padded, length-sorted batches) give the same rows, in the same
    places, equal to a plain forward of each document alone; a bidirectional model falls back to padding."""
    from mechscope.extract.chunks import Chunker, Settings
    from mechscope.extract.pipeline import Runner
    from mechscope.extract.sources import Record

    class Sink:
        def __init__(self):
            self.rows = {}

        def put(self, out, dest):
            for r, d in enumerate(dest):
                self.rows[int(d)] = out[MLP_F[family]][r].float().numpy()

    m = tiny(family)
    s = Settings(sites=[MLP_F[family]], max_length=40, batch_tokens=64, shard_tokens=10_000)
    chunk = next(iter(Chunker([Record(i, t) for i, t in enumerate(DOCS)], m.tokenizer, s)))
    got = {}
    for pack in (True, False):
        runner = Runner(m, s, pack=pack)
        assert runner.pack is pack
        sink = Sink()
        runner.run_chunk(chunk, sink)
        got[pack] = sink.rows
    assert sorted(got[True]) == list(range(chunk.rows))
    start = 0
    for seq in chunk.seqs:
        _, alone = m.run([seq], capture=[MLP_F[family]], logits=False)
        for j in range(len(seq)):
            np.testing.assert_allclose(got[True][start + j], alone[MLP_F[family]][0, j].numpy(), atol=1e-5)
            np.testing.assert_allclose(got[False][start + j], got[True][start + j], atol=1e-5)
        start += len(seq)
    assert Runner(tiny("bert"), Settings(sites=["blocks.0.hook_mlp_out"], max_length=40)).pack is False


MLP_F = {"llama": MLP, "gpt2": "blocks.1.hook_mlp_out", "gpt_neox": "blocks.1.hook_resid_post"}
