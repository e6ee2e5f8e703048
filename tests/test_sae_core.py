"""SAE: metrics against direct numpy computations, dictionary recovery, exact resume, SAELens round trip, splice test
of an identity SAE, feature pages. Uses an in-memory dataset; test_sae_dataset.py runs on a real extracted one."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mechscope.errors import MechscopeError
from mechscope.sae import SAE, SAEConfig, evaluate, export_saelens, features, import_saelens, splice_test, train
from mechscope.sae import metrics as M
from mechscope.sae.data import RowStream


class FakeDataset:
    """The reader protocol the trainer needs, in memory."""

    def __init__(self, x: np.ndarray, site: str = "blocks.1.hook_mlp_out", doc_len: int = 50, texts=None):
        self.x = np.asarray(x, dtype=np.float32)
        self.sites = [site]
        self.manifest = {"model": {"model": "fake"}, "sites": [site]}
        n = len(self.x)
        self.doc_ids = np.arange(n) // doc_len
        self.positions = np.arange(n) % doc_len
        self.token_ids = (np.arange(n) * 7) % 97
        self.texts = texts

    def __len__(self):
        return len(self.x)

    def d(self, site):
        return self.x.shape[1]

    def read(self, site, rows):
        return self.x[np.asarray(rows)].astype(np.float32)

    def document_text(self, doc_id):
        return self.texts[doc_id % len(self.texts)]


def sparse_data(n=40000, d=32, m=64, k=3, seed=0):
    rng = np.random.default_rng(seed)
    D = rng.normal(size=(m, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    codes = np.zeros((n, m))
    idx = np.argsort(rng.random((n, m)), axis=1)[:, :k]
    np.put_along_axis(codes, idx, rng.uniform(0.5, 1.5, (n, k)), axis=1)
    return (codes @ D).astype(np.float32) + 0.3, D


# ---- metrics -------------------------------------------------------------------------------------------------------
def test_metrics_match_direct_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(5.0, 2.0, size=(1000, 16)).astype(np.float32)  # an offset mean: FVU must subtract it
    x_hat = x + rng.normal(0, 0.5, size=x.shape).astype(np.float32)
    acts = np.maximum(rng.normal(-1.2, 1, size=(1000, 40)), 0).astype(np.float32)
    acts[:, 3] = 0                  # dead everywhere
    acts[:900, 4] = 0               # alive only on the last 100 rows
    acts[:, 5] = 0
    acts[10, 5] = 1.0               # active once, early: dead over the last 500 tokens
    acts[:, 6] = 1.0                # dense
    x64, xh64 = x.astype(np.float64), x_hat.astype(np.float64)
    direct_fvu = ((x64 - xh64) ** 2).sum() / ((x64 - x64.mean(0)) ** 2).sum()
    assert M.fvu(x, x_hat) == pytest.approx(direct_fvu, rel=1e-12)
    assert M.l0(acts) == pytest.approx((acts > 0).sum(1).mean())
    assert set(M.dead_latents(acts)) == {3}
    assert set(M.dead_latents(acts, last_n=500)) == {3, 5}
    assert 6 in M.dense_latents(acts) and all((acts[:, i] > 0).mean() > 0.1 for i in M.dense_latents(acts))

    acc = M.Accumulator(40, dead_window=500)
    for a in range(0, 1000, 137):  # uneven batches: the streaming update must equal the direct formula
        acc.update(torch.from_numpy(x[a:a + 137]), torch.from_numpy(x_hat[a:a + 137]),
                   torch.from_numpy(acts[a:a + 137]))
    r = acc.result()
    assert r["fvu"] == pytest.approx(direct_fvu, rel=1e-10)
    assert r["explained_variance"] == pytest.approx(1 - direct_fvu, rel=1e-10)
    assert r["l0"] == pytest.approx((acts > 0).sum(1).mean(), rel=1e-12)
    assert set(r["dead_latents"]) == {3, 5} and r["dead_window_tokens"] == 500
    assert r["dense"] == len(M.dense_latents(acts))
    np.testing.assert_allclose(r["frequencies"], (acts > 0).mean(0))


# ---- architectures -------------------------------------------------------------------------------------------------
def test_architectures_forward():
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    sae = SAE.init(SAEConfig(d_in=8, d_sae=32, arch="topk", k=4))
    assert ((sae.encode(x) > 0).sum(-1) <= 4).all()
    sae.cfg.arch = "batchtopk"
    train_acts = sae.activate(sae.pre_acts(x), training=True)
    assert (train_acts > 0).sum() <= 4 * 64
    sae.threshold.fill_(0.5)
    inf = sae.encode(x)
    pre = sae.pre_acts(x)
    assert torch.equal(inf > 0, pre > 0.5)
    ident = SAE.identity(8)
    assert torch.equal(ident(x), x)
    with pytest.raises(MechscopeError):
        SAEConfig(d_in=8, d_sae=32, arch="topk", k=64)


def test_row_stream_is_a_shuffled_permutation_and_random_access():
    x = np.arange(1000, dtype=np.float32)[:, None].repeat(2, 1)
    ds = FakeDataset(x)
    s = RowStream(ds, ds.sites[0], 1000, 100, seed=3, chunk=64, buffer_tokens=256)
    seen = torch.cat([s.batch(i) for i in range(10)])[:, 0].numpy()
    assert sorted(seen.tolist()) == list(range(1000)) and not np.array_equal(seen, np.arange(1000))
    again = RowStream(ds, ds.sites[0], 1000, 100, seed=3, chunk=64, buffer_tokens=256)
    assert torch.equal(again.batch(7), s.batch(7)) and torch.equal(again.batch(13), s.batch(13))
    s.close(), again.close()


# ---- training ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_training_recovers_a_known_sparse_dictionary(tmp_path, arch):
    x, D = sparse_data()
    sae = train(FakeDataset(x), None, tmp_path / arch, arch=arch, k=3, d_sae=128, lr=3e-3, batch_tokens=256,
                tokens=120_000, progress=False, seed=0)
    W = sae.W_dec.detach().numpy()
    assert np.allclose(np.linalg.norm(W, axis=1), 1, atol=1e-5)  # unit-norm decoder rows
    best = (D @ W.T).max(1)
    assert best.mean() >= 0.9, best.mean()
    cfg = json.loads((tmp_path / arch / "config.json").read_text())
    assert cfg["input_scale"] == pytest.approx(np.sqrt(32) / np.linalg.norm(x, axis=1).mean(), rel=0.02)
    assert cfg["extra"]["train"]["steps"] == 469 and cfg["extra"]["data"]["heldout_rows"][1] == len(x)
    if arch == "batchtopk":
        assert float(sae.threshold[0]) > 0
        res = evaluate(tmp_path / arch, FakeDataset(x), model=False)
        assert res["reconstruction"]["l0"] == pytest.approx(3, rel=0.35)


def test_relu_l1_training_recovers_a_known_sparse_dictionary(tmp_path):
    """The ReLU (L1) path recovers the dictionary too. The bar can fail: a random decoder scores ~0.45, and the same
    run without the L1 penalty (a dense code) ~0.56, so reaching 0.9 takes the L1 term doing its job."""
    x, D = sparse_data()
    kw = dict(arch="relu", d_sae=128, lr=3e-3, batch_tokens=256, tokens=120_000, progress=False, seed=0)
    score = lambda sae: float((D @ sae.W_dec.detach().numpy().T).max(1).mean())  # noqa: E731
    untrained = SAE.init(SAEConfig(d_in=32, d_sae=128, arch="relu", k=None), generator=torch.Generator().manual_seed(0))
    assert score(untrained) < 0.6, score(untrained)
    sae = train(FakeDataset(x), None, tmp_path / "l1", l1=1.0, **kw)
    W = sae.W_dec.detach().numpy()
    assert np.allclose(np.linalg.norm(W, axis=1), 1, atol=1e-5)  # unit-norm decoder rows: the L1 cannot be dodged
    assert score(sae) >= 0.9, score(sae)
    cfg = json.loads((tmp_path / "l1" / "config.json").read_text())
    assert cfg["arch"] == "relu" and cfg["k"] is None and cfg["extra"]["train"]["l1"] == 1.0
    rec = evaluate(tmp_path / "l1", FakeDataset(x), model=False)["reconstruction"]
    assert rec["l0"] < 16 and rec["fvu"] < 0.2, rec  # sparse (3 true atoms per row) and still reconstructing
    dense = train(FakeDataset(x), None, tmp_path / "no_l1", l1=0.0, **kw)
    assert score(dense) < 0.75, score(dense)


def test_relu_l1_warmup_rescues_the_default_l1(tmp_path):
    """With the default l1 (5) and no L1 warm-up, most latents die in the first steps (before the decoder has found
    the atoms) and never recover: ~0.59 mean best cosine, ~97% dead. The default warm-up (a linear ramp of the
    coefficient over the first 20% of steps) recovers the dictionary."""
    x, D = sparse_data()
    kw = dict(arch="relu", d_sae=128, lr=3e-3, batch_tokens=256, tokens=120_000, progress=False, seed=0)
    score = lambda sae: float((D @ sae.W_dec.detach().numpy().T).max(1).mean())  # noqa: E731
    warm = train(FakeDataset(x), None, tmp_path / "warm", **kw)  # default l1 and default warm-up
    cfg = json.loads((tmp_path / "warm" / "config.json").read_text())["extra"]["train"]
    assert cfg["l1"] == 5.0 and cfg["l1_warmup_steps"] == 469 // 5
    log = [json.loads(line) for line in (tmp_path / "warm" / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["l1"] == pytest.approx(5.0 * 20 / 93) and log[-1]["l1"] == 5.0  # the ramp, logged
    cold = train(FakeDataset(x), None, tmp_path / "cold", l1_warmup_steps=0, **kw)
    assert score(warm) >= 0.9, score(warm)
    assert score(cold) < score(warm) - 0.15, (score(cold), score(warm))
    dead = {name: evaluate(tmp_path / name, FakeDataset(x), model=False)["reconstruction"]["dead_fraction"]
            for name in ("warm", "cold")}
    assert dead["warm"] < 0.1 and dead["cold"] > 0.5, dead


def test_cli_l1_warmup_option(monkeypatch, tmp_path):
    import importlib

    from click.testing import CliRunner

    from mechscope.cli import main

    T = importlib.import_module("mechscope.sae.train")  # the module (mechscope.sae.train is also the function)

    seen = []

    def fake_train(*args, **kw):
        seen.append(kw["config"].l1_warmup_steps if "config" in kw else kw.get("l1_warmup_steps", "missing"))
        return SAE.init(SAEConfig(d_in=4, d_sae=8, arch="relu", k=None, site="s"))

    monkeypatch.setattr(T, "train", fake_train)
    base = ["sae", "train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--arch", "relu", "--no-progress"]
    for extra in ([], ["--l1-warmup", "7"], ["--l1-warmup-steps", "0"]):
        res = CliRunner().invoke(main, base + extra, catch_exceptions=False)
        assert res.exit_code == 0, res.output
    assert seen == [None, 7, 0]
    assert "--l1-warmup" in CliRunner().invoke(main, ["sae", "train", "--help"]).output


def test_negative_l1_warmup_is_refused_before_anything_is_written(tmp_path):
    x, _ = sparse_data(n=2000)
    with pytest.raises(MechscopeError, match=r"--l1-warmup-steps must be >= 0 \(got -3\); pass 0"):
        train(FakeDataset(x), None, tmp_path / "neg", arch="relu", d_sae=16, l1_warmup_steps=-3, batch_tokens=256,
              tokens=2048, progress=False)
    assert not (tmp_path / "neg").exists()


def test_relu_aux_loss_and_dead_latents(tmp_path):
    x, _ = sparse_data(n=8000)
    sae = train(FakeDataset(x), None, tmp_path / "r", arch="relu", d_sae=64, l1=3.0, lr=3e-3, batch_tokens=256,
                tokens=20_000, dead_tokens=512, progress=False)
    log = [json.loads(line) for line in (tmp_path / "r" / "train_log.jsonl").read_text().splitlines()]
    assert log and all(np.isfinite(e["loss"]) for e in log)
    assert sae.cfg.arch == "relu" and sae.cfg.k is None


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_resume_after_kill_gives_identical_weights(tmp_path, arch):
    x, _ = sparse_data(n=6000)
    kw = dict(arch=arch, k=3, d_sae=64, lr=3e-3, batch_tokens=128, tokens=128 * 60, progress=False, seed=5,
              checkpoint_every=7, dead_tokens=256)
    if arch == "relu":  # the kill and the checkpoint it resumes from fall inside the L1 warm-up
        kw.update(l1=3.0, l1_warmup_steps=40)
    full = train(FakeDataset(x), None, tmp_path / "full", **kw)
    with pytest.raises(KeyboardInterrupt):  # dies after step 25; the last checkpoint is step 21
        train(FakeDataset(x), None, tmp_path / "killed", _stop_after=25, **kw)
    with pytest.raises(MechscopeError, match="--resume"):
        train(FakeDataset(x), None, tmp_path / "killed", **kw)
    with pytest.raises(MechscopeError, match="different settings"):
        train(FakeDataset(x), None, tmp_path / "killed", resume=True, **{**kw, "lr": 1e-3})
    if arch == "relu":
        for other in (30, None, 0):  # None: the default, 20% of the 60 steps
            with pytest.raises(MechscopeError, match="l1_warmup_steps=40 there"):
                train(FakeDataset(x), None, tmp_path / "killed", resume=True, **{**kw, "l1_warmup_steps": other})
    else:  # no L1 term: the warm-up is not part of the run (None in the resolved config) and not checked
        kw["l1_warmup_steps"] = 30
    resumed = train(FakeDataset(x), None, tmp_path / "killed", resume=True, **kw)
    for name, p in full.state_dict().items():
        assert torch.equal(p, resumed.state_dict()[name]), name
    cfg = json.loads((tmp_path / "killed" / "config.json").read_text())["extra"]["train"]
    assert cfg["l1_warmup_steps"] == (40 if arch == "relu" else None)


def test_resume_of_a_relu_checkpoint_from_before_the_l1_warmup(tmp_path):
    """Checkpoints written before l1_warmup_steps existed trained without a warm-up: they resume with 0 (and only
    with 0), and end as an uninterrupted run with l1_warmup_steps=0."""
    x, _ = sparse_data(n=6000)
    kw = dict(arch="relu", d_sae=64, l1=3.0, lr=3e-3, batch_tokens=128, tokens=128 * 30, progress=False, seed=5,
              checkpoint_every=7, l1_warmup_steps=0)
    full = train(FakeDataset(x), None, tmp_path / "full", **kw)
    with pytest.raises(KeyboardInterrupt):
        train(FakeDataset(x), None, tmp_path / "old", _stop_after=10, **kw)
    ckpt = tmp_path / "old" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=False)
    del state["resolved"]["l1_warmup_steps"]
    torch.save(state, ckpt)
    with pytest.raises(MechscopeError, match="l1_warmup_steps=0 there"):
        train(FakeDataset(x), None, tmp_path / "old", resume=True, **{**kw, "l1_warmup_steps": None})
    resumed = train(FakeDataset(x), None, tmp_path / "old", resume=True, **kw)
    for name, p in full.state_dict().items():
        assert torch.equal(p, resumed.state_dict()[name]), name


# ---- SAELens format ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["topk", "relu", "batchtopk"])
def test_saelens_round_trip(tmp_path, arch):
    torch.manual_seed(0)
    sae = SAE.init(SAEConfig(d_in=16, d_sae=48, arch=arch, k=5 if arch != "relu" else None, input_scale=2.5,
                             site="blocks.3.hook_resid_post", model="gpt2"))
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_dec.normal_()
        if arch == "batchtopk":
            sae.threshold.fill_(0.3)
    export_saelens(sae, tmp_path / "sl")
    cfg = json.loads((tmp_path / "sl" / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == "blocks.3.hook_resid_post"
    assert cfg["architecture"] == {"topk": "topk", "relu": "standard", "batchtopk": "jumprelu"}[arch]
    from safetensors.torch import load_file

    w = load_file(str(tmp_path / "sl" / "sae_weights.safetensors"))
    assert {"W_enc", "W_dec", "b_enc", "b_dec"} <= set(w) and w["W_enc"].shape == (16, 48)
    # the SAELens forward (no scaling) on the exported tensors equals ours
    x = torch.randn(20, 16) * 3
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    if arch == "topk":
        v, i = pre.topk(5, -1)
        acts = torch.zeros_like(pre).scatter_(-1, i, v.relu())
    elif arch == "relu":
        acts = pre.relu()
    else:
        acts = pre.relu() * (pre > w["threshold"])
    torch.testing.assert_close(acts @ w["W_dec"] + w["b_dec"], sae(x), rtol=1e-5, atol=1e-5)
    back = import_saelens(tmp_path / "sl", tmp_path / "back")
    for name, p in sae.state_dict().items():
        torch.testing.assert_close(back.state_dict()[name], p, rtol=1e-6, atol=1e-6)
    assert back.cfg.arch == arch and back.cfg.input_scale == 2.5 and back.cfg.site == sae.cfg.site
    torch.testing.assert_close(SAE.load(tmp_path / "back")(x), sae(x), rtol=1e-5, atol=1e-5)


def test_import_foreign_saelens_without_mechscope_metadata(tmp_path):
    from safetensors.torch import save_file

    (tmp_path / "f").mkdir()
    W = torch.randn(8, 24)
    save_file({"W_enc": W, "W_dec": W.T.contiguous(), "b_enc": torch.zeros(24), "b_dec": torch.ones(8)},
              str(tmp_path / "f" / "sae_weights.safetensors"))
    (tmp_path / "f" / "cfg.json").write_text(json.dumps({"architecture": "standard", "d_in": 8, "d_sae": 24,
                                                         "apply_b_dec_to_input": False,
                                                         "hook_name": "blocks.0.hook_resid_pre"}))
    sae = import_saelens(tmp_path / "f")
    x = torch.randn(4, 8)
    torch.testing.assert_close(sae(x), (x @ W).relu() @ W.T + 1)
    assert sae.cfg.site == "blocks.0.hook_resid_pre"


# ---- splice test and reports ---------------------------------------------------------------------------------------
def test_identity_sae_splices_with_zero_loss_increase_and_report(tmp_path):
    from mechscope.tiny import tiny_model

    model = tiny_model("llama")
    site = "blocks.1.hook_mlp_out"
    texts = ["The quick brown fox jumps over the lazy dog.", "Sparse autoencoders find features.", "a b c"]
    ident = SAE.identity(model.cfg.d_model)
    ident.cfg.site = site
    res = splice_test(model, ident, texts)
    assert res["ce_increase"] == 0.0 and res["loss_recovered"] == pytest.approx(1.0)
    assert res["ce_zero"] != res["ce_clean"]
    _, cache = model.run(texts, capture=[site], logits=False)
    acts = cache[site][cache.attention_mask].numpy()
    ds = FakeDataset(np.concatenate([acts] * 20), site=site, doc_len=10, texts=texts)
    ident.cfg.model = "tiny"
    out = evaluate(ident, ds, model=model, out=tmp_path / "ev")
    assert out["reconstruction"]["fvu"] == 0.0 and out["splice"]["ce_increase"] == 0.0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["reconstruction"]["l0"] == pytest.approx(out["reconstruction"]["l0"])
    html = (tmp_path / "ev" / "report.html").read_text()
    assert "<script" not in html and "http" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "Splice test" in html and "FVU" in html


def test_features_page_is_self_contained_and_escaped(tmp_path):
    x, _ = sparse_data(n=3000)
    ds = FakeDataset(x, doc_len=30)
    sae = SAE.init(SAEConfig(d_in=32, d_sae=16, arch="topk", k=2, site=ds.sites[0]))

    class Tok:
        def decode(self, ids):
            return "<b>&" if ids[0] % 2 else f"t{ids[0]}"

    res = features(sae, ds, "0-3,7", out=tmp_path / "f", n_examples=3, window=4, tokenizer=Tok())
    assert [it["latent"] for it in res["latents"]] == [0, 1, 2, 3, 7]
    freq = (sae.encode(torch.from_numpy(x)) > 0).float().mean(0).numpy()
    for it in res["latents"]:
        assert it["frequency"] == pytest.approx(freq[it["latent"]])
        for e in it["examples"]:
            assert sum(t["max"] for t in e["tokens"]) == 1 and len(e["tokens"]) <= 9
            assert len({ds.doc_ids[e["row"]]}) == 1
    html = (tmp_path / "f" / "features.html").read_text()
    assert "<b>&" not in html and "&lt;b&gt;&amp;" in html and "<script" not in html
    with pytest.raises(MechscopeError):
        features(sae, ds, "0-99")


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_sparse_kernels_match_dense_loss_and_gradients(arch):
    from mechscope.sae.train import Trainer

    torch.manual_seed(0)
    x = torch.randn(64, 16) * 2
    grads = []
    for use_sparse in (True, False):
        sae = SAE.init(SAEConfig(d_in=16, d_sae=96, arch=arch, k=5), generator=torch.Generator().manual_seed(1))
        r = dict(sparse=use_sparse, l1=0.0, aux_k=8, aux_coef=1 / 32, dead_tokens=64, d_sae=96, lr=1e-3)
        t = Trainer(sae, r, None, torch.device("cpu"))
        t.since_fired[::3] = 100  # a third of the latents dead: exercises the aux-k loss too
        out = t.loss(x)
        out["loss"].backward()
        grads.append([out["loss"].detach(), out["x_hat"].detach(), out["aux"].detach(), out["fired"]]
                     + [p.grad.clone() for p in (sae.W_enc, sae.W_dec, sae.b_enc, sae.b_dec)])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_import_saelens_topk_with_decoder_norm_rescaling(tmp_path):
    """SAELens 6 TopK inference SAEs rank latents by activation x decoder-row norm; import folds the norms in."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    W_enc, W_dec, b_enc, b_dec = torch.randn(8, 40), torch.randn(40, 8) * 3, torch.randn(40), torch.randn(8)
    (tmp_path / "t").mkdir()
    save_file({"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec},
              str(tmp_path / "t" / "sae_weights.safetensors"))
    (tmp_path / "t" / "cfg.json").write_text(json.dumps({
        "architecture": "topk", "d_in": 8, "d_sae": 40, "k": 4, "rescale_acts_by_decoder_norm": True,
        "apply_b_dec_to_input": True, "normalize_activations": "none",
        "metadata": {"sae_lens_version": "6.54.12", "hook_name": "blocks.1.hook_resid_post"}}))
    sae = import_saelens(tmp_path / "t")
    x = torch.randn(30, 8)
    n = W_dec.norm(dim=-1)
    pre = ((x - b_dec) @ W_enc + b_enc) * n  # what SAELens computes
    v, i = pre.topk(4, -1)
    expected = torch.zeros_like(pre).scatter_(-1, i, v.relu()) @ (W_dec / n[:, None]) + b_dec
    torch.testing.assert_close(sae(x), expected, rtol=1e-5, atol=1e-5)
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(40), atol=1e-5)


def test_truncated_sae_weights_are_one_paragraph_exit_2_nothing_touched(tmp_path):
    """issue 10 item 6: a half-copied sae.safetensors in `sae eval` is a DataError (exit 2), and nothing is written."""
    from click.testing import CliRunner

    from mechscope.cli import main
    from mechscope.errors import DataError

    folder = tmp_path / "sae"
    SAE.init(SAEConfig(d_in=8, d_sae=16, arch="topk", k=2, site="blocks.0.hook_mlp_out")).save(folder)
    w = folder / "sae.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(DataError, match="truncated or corrupt"):
        SAE.load(folder)
    r = CliRunner().invoke(main, ["sae", "eval", "--sae", str(folder), "--data", str(tmp_path / "acts"),
                                  "--no-splice"])
    assert r.exit_code == 2 and "truncated or corrupt" in r.output and "Traceback" not in r.output
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_sae_load_and_the_options_each_subcommand_documents(tmp_path):
    """issue 10 item 19: `mechscope.sae.load` exists (what SAE.load does); the sae subcommands take the options the
    group's help (and docs/sae.md) promise."""
    import mechscope
    from click.testing import CliRunner

    from mechscope.cli import main

    sae = SAE.init(SAEConfig(d_in=8, d_sae=16, arch="topk", k=2, site="blocks.0.hook_mlp_out"))
    sae.save(tmp_path / "s")
    back = mechscope.sae.load(tmp_path / "s")
    for name, p in sae.state_dict().items():
        assert torch.equal(p, back.state_dict()[name]), name
    promised = {"train": ["--device", "--json"], "eval": ["--model", "--dtype", "--device", "--json"],
                "features": ["--model", "--dtype", "--device", "--json"], "export": ["--json"], "import": ["--json"]}
    for sub, options in promised.items():
        help_text = CliRunner().invoke(main, ["sae", sub, "--help"]).output
        assert all(o in help_text for o in options), (sub, help_text)
    assert "eval and features take --model, --dtype and --device" in CliRunner().invoke(main, ["sae", "--help"]).output
