"""Activation patching: the exact engine equals a naive loop, invariants, attribution, validation, outputs."""
from __future__ import annotations

import json

import pytest
import torch

from mechscope import MechscopeError
from mechscope.patching import (save_result, RESULT_FIELDS, Cell, attribution_cells, exact_cells, make_metric, naive_cells,
                                record, sweep, sweep_spec)
from mechscope.patching.exact import Recorded
from mechscope.tiny import tiny_model

CAUSAL = ("gpt2", "llama", "mistral", "qwen2", "phi3", "gpt_neox", "gpt_neox_seq")
KINDS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z")
CLEAN, CORRUPT = "The cat sat on", "The dog sat on"


@pytest.fixture(scope="module")
def models():
    return {f: tiny_model(f) for f in CAUSAL}


def _setup(m, kind, metric="logit_diff", clean=CLEAN, corrupt=CORRUPT):
    c, k = m.encode(clean), m.encode(corrupt)
    layers = list(range(m.cfg.n_layers))
    base, src = record(m, k, kind, layers, blocks=True), record(m, c, kind, layers)
    met = make_metric(metric, 40, 50, src.logits, base.logits)
    return base, src, met, layers


@pytest.mark.parametrize("family", CAUSAL)
def test_exact_equals_naive_every_family_and_site(models, family):
    m = models[family]
    for kind in KINDS:
        if kind == "resid_mid" and m.adapter.resid_mid is None:
            continue
        metric = {"z": "kl", "mlp_out": "logprob"}.get(kind, "logit_diff")
        base, src, met, layers = _setup(m, kind, metric)
        cols = range(m.cfg.n_heads) if kind == "z" else range(len(base.ids))
        cells = [Cell(L, c) for L in layers for c in cols]
        zp = [4, 5] if kind == "z" else None
        slow = naive_cells(m, kind, cells, base, src, met, z_positions=zp)
        assert slow.std() > 0  # the sweep does something
        for reuse in (True, False):  # rows computed from their first patched position on / from position 0
            fast = exact_cells(m, kind, cells, base, src, met, z_positions=zp, max_batch=7, reuse_prefix=reuse)
            assert torch.allclose(fast, slow, atol=1e-4, rtol=0), (family, kind, reuse, (fast - slow).abs().max())


def test_z_all_positions_equals_naive(models):
    m = models["llama"]
    base, src, met, layers = _setup(m, "z")
    cells = [Cell(L, h) for L in layers for h in range(m.cfg.n_heads)]
    fast = exact_cells(m, "z", cells, base, src, met)
    slow = naive_cells(m, "z", cells, base, src, met)
    assert torch.allclose(fast, slow, atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", ("llama", "gpt2", "gpt_neox_seq"))
def test_patching_every_position_reproduces_clean(models, family):
    m = models[family]
    for kind in ("resid_pre", "resid_mid", "resid_post"):
        base, src, met, layers = _setup(m, kind)
        everything = tuple(range(len(base.ids)))
        for reuse in (True, False):
            vals = exact_cells(m, kind, [Cell(L, everything) for L in layers], base, src, met, reuse_prefix=reuse)
            assert torch.allclose(vals, torch.full_like(vals, met.clean_value), atol=1e-4), (kind, vals)


def test_positions_before_first_difference_have_no_effect(models):
    m = models["qwen2"]
    res = sweep(m, CLEAN, CORRUPT, answers=("a", "b"), kind="resid_pre")
    first = next(i for i, (a, b) in enumerate(zip(res.tokens, res.corrupt_tokens)) if a["id"] != b["id"])
    assert first >= 2
    mat = res.tensor()
    assert torch.all(mat[:, :first] == res.corrupt_value)
    base, src, met, layers = _setup(m, "resid_pre")  # the same cells through plain HF forwards
    naive = naive_cells(m, "resid_pre", [Cell(L, p) for L in layers for p in range(first)], base, src, met)
    assert torch.allclose(naive, torch.full_like(naive, met.corrupt_value), atol=1e-5)
    # the last layer's resid_post at the last position is the clean run's final residual
    res2 = sweep(m, CLEAN, CORRUPT, answers=("a", "b"), kind="resid_post", layers="-1")
    assert abs(res2.matrix[0][-1] - res2.clean_value) < 1e-4


@pytest.mark.parametrize("kind", ("resid_pre", "resid_mid", "resid_post", "mlp_out", "z"))
def test_attribution_is_the_first_order_term(models, kind):
    """attribution - base == d/d eps metric(base + eps * (src - base)) at 0, checked by a finite difference."""
    m = tiny_model("llama")
    m.hf.double()
    base, src, met, layers = _setup(m, kind)
    cols = list(range(m.cfg.n_heads)) if kind == "z" else list(range(len(base.ids)))
    attr, base_value, _ = attribution_cells(m, kind, layers, cols, base.ids, src, met)
    eps = 1e-3  # central difference (RMSNorm computes in fp32 even in an fp64 model)
    cells = [Cell(L, c) for L in layers for c in cols]
    f = [exact_cells(m, kind, cells, base, Recorded(ids=src.ids, logits=src.logits, acts={
        L: base.acts[L] + s * eps * (src.acts[L] - base.acts[L]) for L in layers}), met) for s in (1, -1)]
    fd = ((f[0] - f[1]) / (2 * eps)).view(len(layers), len(cols))
    lin = (attr.double() - base_value)
    assert torch.allclose(lin, fd, atol=2e-3 * float(fd.abs().max()) + 1e-6), (kind, lin, fd)


def test_sweep_result_and_outputs(models, tmp_path):
    m = models["gpt2"]
    res = sweep(m, CLEAN, CORRUPT, answers=("a", "b"), metric="normalized", layers="0,2", positions="3-5")
    assert res.layers == [0, 2] and res.positions == [3, 4, 5]
    assert len(res.matrix) == 2 and len(res.matrix[0]) == 3
    paths = save_result(res, tmp_path)
    data = json.loads((tmp_path / "result.json").read_text())
    assert tuple(data) == RESULT_FIELDS
    assert data["tokens"][4] == {"position": 4, "id": m.encode(CLEAN)[4], "token": "c"}
    assert data["answers"][0]["token"] == "a"
    csv = (tmp_path / "result.csv").read_text().splitlines()
    assert csv[0] == "layer,position,token,value" and len(csv) == 1 + 6
    assert (tmp_path / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    html = (tmp_path / "report.html").read_text()
    assert "http://" not in html and "https://" not in html and "<script src" not in html
    assert "mechscope patch --model tiny-gpt2 --clean" in html
    assert set(paths) >= {"result.json", "result.csv", "heatmap.png", "report.html"}


def test_noise_direction_and_metrics(models):
    m = models["llama"]
    den = sweep(m, CLEAN, CORRUPT, answers=("a", "b"), layers="-1")
    noi = sweep(m, CLEAN, CORRUPT, answers=("a", "b"), direction="noise", layers="-1")
    assert den.clean_value == pytest.approx(noi.clean_value) and den.corrupt_value == pytest.approx(noi.corrupt_value)
    assert noi.matrix[0][-1] == pytest.approx(noi.corrupt_value, abs=1e-4)  # corrupted final residual -> corrupted
    assert den.matrix[0][-1] == pytest.approx(den.clean_value, abs=1e-4)
    norm = sweep(m, CLEAN, CORRUPT, answers=("a", "b"), metric="normalized", layers="-1")
    assert norm.clean_value == pytest.approx(1) and norm.corrupt_value == pytest.approx(0)
    kl = sweep(m, CLEAN, CORRUPT, answers=("a",), metric="kl", layers="-1")
    assert kl.clean_value == pytest.approx(0, abs=1e-6) and kl.matrix[0][-1] == pytest.approx(0, abs=1e-5)
    p = sweep(m, CLEAN, CORRUPT, answers=("a",), metric="prob", layers="0")
    lp = sweep(m, CLEAN, CORRUPT, answers=("a",), metric="logprob", layers="0")
    assert torch.allclose(p.tensor(), lp.tensor().exp(), atol=1e-6)


def test_z_single_position_and_attribution_verify(models):
    m = models["phi3"]
    res = sweep(m, CLEAN, CORRUPT, answers=("a", "b"), kind="z", positions="-1")
    assert res.positions == [len(res.tokens) - 1] and len(res.matrix[0]) == m.cfg.n_heads
    att = sweep(m, CLEAN, CORRUPT, answers=("a", "b"), kind="resid_pre", method="attribution", verify_top=5)
    assert len(att.verify) == 5 and att.method == "attribution"
    exact = sweep(m, CLEAN, CORRUPT, answers=("a", "b"), kind="resid_pre")
    for v in att.verify:
        assert v["exact"] == pytest.approx(exact.matrix[v["layer"]][v["column"]], abs=1e-4)


def test_spec_several_pairs_mean(models, tmp_path):
    from mechscope.patching import load_spec

    spec = tmp_path / "pairs.yaml"
    spec.write_text("site: resid_post\nlayers: '0,1'\npairs:\n"
                    "  - {clean: 'The cat sat', corrupt: 'The dog sat', tokens: ['a', 'b']}\n"
                    "  - {clean: 'One cat ran', corrupt: 'One dog ran', tokens: ['x', 'y']}\n")
    res = sweep_spec(models["llama"], load_spec(spec))
    assert len(res.pairs) == 2 and res.layers == [0, 1]
    want = (res.pairs[0].tensor() + res.pairs[1].tensor()) / 2
    assert torch.allclose(res.tensor(), want, atol=1e-6)
    save_result(res, tmp_path / "out")
    assert (tmp_path / "out" / "pairs" / "01" / "result.json").exists()


def test_validation_errors(models):
    m = models["llama"]
    with pytest.raises(MechscopeError) as e:
        sweep(m, "The cat sat", "The mouse sat", answers=("a", "b"))
    msg = str(e.value)
    assert "11 tokens" not in msg and "<< differs" in msg and "'m'" in msg and "corrupt piece" in msg
    with pytest.raises(MechscopeError, match="not a single token"):
        sweep(m, CLEAN, CORRUPT, answers=("ab", "b"))
    with pytest.raises(MechscopeError, match="resid_mid"):
        sweep(models["gpt_neox"], CLEAN, CORRUPT, answers=("a", "b"), kind="resid_mid")
    with pytest.raises(MechscopeError, match="Choose one of"):
        sweep(m, CLEAN, CORRUPT, answers=("a", "b"), metric="bogus")
    with pytest.raises(MechscopeError, match="out of range"):
        sweep(m, CLEAN, CORRUPT, answers=("a", "b"), layers="7")
    with pytest.raises(MechscopeError, match="encoder"):
        sweep(tiny_model("bert"), CLEAN, CORRUPT, answers=("a", "b"))


# ---- the embedded model (slow) --------------------------------------------------------------------------------
NAME_SWAP = ("Michelle Jones was a top-notch student. Michelle", "Michelle Smith was a top-notch student. Michelle")


@pytest.fixture(scope="module")
def smol():
    import mechscope

    return mechscope.load(dtype="fp32", device="cpu")


@pytest.mark.slow
def test_embedded_exact_equals_naive(smol):
    for kind, layers in (("resid_post", [0, 23]), ("z", [27])):
        base, src, met, _ = _setup(smol, kind, clean=NAME_SWAP[0], corrupt=NAME_SWAP[1])
        met = make_metric("logit_diff", 6423, 11712, src.logits, base.logits)
        cols = range(smol.cfg.n_heads) if kind == "z" else range(len(base.ids))
        cells = [Cell(L, c) for L in layers for c in cols]
        slow = naive_cells(smol, kind, cells, base, src, met)
        for reuse in (True, False):
            fast = exact_cells(smol, kind, cells, base, src, met, reuse_prefix=reuse)
            assert torch.allclose(fast, slow, atol=1e-4, rtol=0), (kind, reuse, (fast - slow).abs().max())


@pytest.mark.slow
def test_embedded_name_swap_and_token_suggestion(smol):
    res = sweep(smol, *NAME_SWAP, answers=(" Smith", " Jones"), layers="0,23,29")
    assert res.clean_value < 0 < res.corrupt_value
    assert res.matrix[-1][-1] == pytest.approx(res.clean_value, abs=1e-4)
    assert res.matrix[0][2] < 0 < res.matrix[0][3]  # the name position carries it early
    with pytest.raises(MechscopeError) as e:
        sweep(smol, *NAME_SWAP, answers=("Smithereens", " Jones"))
    assert "not a single token" in str(e.value)
    with pytest.raises(MechscopeError, match="leading space, ' Michelle'"):
        sweep(smol, *NAME_SWAP, answers=("Michelle", " Jones"))
