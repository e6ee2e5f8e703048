"""Transformer vs LSTM (mechscope.lab.rnn_*): tasks, models, generation state, memory counting, the whole run.

Every check compares against an independent computation: a Python loop over the task definition, the model's
own full forward, a parameter count formula against `numel`, byte counts from the tensor shapes."""
from __future__ import annotations

import json

import pytest
import torch

from mechscope.errors import ConfigError
from mechscope.lab import rnn_tasks
from mechscope.lab.rnn_models import CausalTransformer, LSTMLM, build_pair, lstm_n_params, n_params
from mechscope.lab.rnn_timing import saved_bytes, state_bytes
from mechscope.lab.rnn_vs_transformer import Config, accuracy, run, train


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_copy_targets_are_the_symbols_after_go():
    ids, targets = rnn_tasks.copy_batch(_gen(), 5, lag=7, n_symbols=8, m=3)
    assert ids.shape == (5, 3 + 7 + 1 + 2)
    for row, tgt in zip(ids.tolist(), targets.tolist()):
        sym = row[:3]
        assert row[3:10] == [8] * 7 and row[10] == 9 and row[11:] == sym[:2]
        assert [t for t in tgt if t != rnn_tasks.IGNORE] == sym
        assert [i for i, t in enumerate(tgt) if t != rnn_tasks.IGNORE] == [10, 11, 12]


def test_induction_targets_repeat_the_first_block():
    ids, targets = rnn_tasks.induction_batch(_gen(), 4, n=6, vocab=32)
    for row, tgt in zip(ids.tolist(), targets.tolist()):
        assert row[:6] == row[6:]
        scored = {i: t for i, t in enumerate(tgt) if t != rnn_tasks.IGNORE}
        assert sorted(scored) == list(range(6, 11))
        assert all(t == row[i + 1] for i, t in scored.items())


def test_parity_targets_are_the_running_xor():
    bits, targets = rnn_tasks.parity_batch(_gen(), 6, length=13)
    for row, tgt in zip(bits.tolist(), targets.tolist()):
        acc = 0
        for b, t in zip(row, tgt):
            acc ^= b
            assert t == acc


def test_kv_cache_generation_equals_the_full_forward():
    torch.manual_seed(0)
    model = CausalTransformer(11, d_model=16, n_layers=2, n_heads=4, max_len=32).eval()
    ids = torch.randint(0, 11, (2, 12))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_state(2, 12)
        parts = [model.step(ids[:, :3], cache)[0], model.step(ids[:, 3:7], cache)[0]]  # prefill, then a chunk
        parts += [model.step(ids[:, t:t + 1], cache)[0] for t in range(7, 12)]  # one token at a time
    assert cache.length == 12
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def test_transformer_is_causal():
    torch.manual_seed(0)
    model = CausalTransformer(11, d_model=16, n_layers=2, n_heads=2, max_len=32).eval()
    a = torch.randint(0, 11, (1, 9))
    b = a.clone()
    b[0, 6:] = (b[0, 6:] + 1) % 11
    with torch.no_grad():
        la, lb = model(a), model(b)
    torch.testing.assert_close(la[:, :6], lb[:, :6])
    assert not torch.allclose(la[:, 6:], lb[:, 6:])


def test_lstm_recurrent_state_equals_the_full_forward():
    torch.manual_seed(0)
    model = LSTMLM(7, d_embed=8, hidden=12, n_layers=2).eval()
    ids = torch.randint(0, 7, (3, 10))
    with torch.no_grad():
        full = model(ids)
        logits, state = model.step(ids[:, :4], None)
        parts = [logits]
        for t in range(4, 10):
            logits, state = model.step(ids[:, t:t + 1], state)
            parts.append(logits)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("vocab,d,h,layers", [(2, 64, 80, 2), (32, 32, 17, 1), (10, 16, 40, 3)])
def test_lstm_parameter_formula_counts_every_parameter(vocab, d, h, layers):
    assert lstm_n_params(vocab, d, h, layers) == n_params(LSTMLM(vocab, d, h, layers))


def test_pair_is_parameter_matched():
    for vocab in (2, 10, 32):
        tf, lstm = build_pair(vocab, 64, 2, 4, 128, seed=0)
        assert abs(n_params(tf) - n_params(lstm)) / n_params(tf) < 0.02
        worse = [abs(lstm_n_params(vocab, 64, lstm.hidden + d, 2) - n_params(tf)) for d in (-1, 1)]
        assert all(w >= abs(n_params(tf) - n_params(lstm)) for w in worse)


def test_saved_bytes_counts_distinct_storages_and_skips_parameters():
    x = torch.randn(10, 25, requires_grad=True)
    assert saved_bytes(lambda: (x * x).sum()) == 10 * 25 * 4  # x saved twice, one storage
    w = torch.nn.Parameter(torch.randn(25, 3))
    assert saved_bytes(lambda: (x @ w).sum(), [w]) == 10 * 25 * 4  # x and w saved; w is a parameter


def test_generation_state_bytes_follow_the_shapes():
    tf = CausalTransformer(5, d_model=16, n_layers=3, n_heads=4, max_len=64)
    lstm = LSTMLM(5, 16, 24, 2)
    assert state_bytes(tf, 5, 40) == 2 * 3 * 40 * 16 * 4  # keys and values, every layer, every position
    assert state_bytes(lstm, 5, 40) == 2 * 2 * 24 * 4  # h and c, every layer: independent of the context


def test_config_rejects_bad_settings():
    from dataclasses import replace

    with pytest.raises(ConfigError, match="steps=0"):
        replace(Config.tiny(), steps=0).check()
    with pytest.raises(ConfigError, match="multiple of n_heads"):
        replace(Config.tiny(), d_model=30).check()


@pytest.mark.heavy
def test_lstm_learns_running_parity_and_keeps_it_on_longer_strings():
    from dataclasses import replace

    cfg = replace(Config.tiny(), steps=250, batch=32, lr=1e-2, train_sizes={"parity": (2, 8)})
    torch.manual_seed(0)
    lstm = LSTMLM(2, 16, 16, 1)
    train(lstm, "parity", cfg, seed=0)
    assert accuracy(lstm, "parity", 8, 256)["token"] > 0.97
    assert accuracy(lstm, "parity", 32, 256)["token"] > 0.9


EVIL_COMMAND = "mechscope lab rnn-vs-transformer --out '<script>window.__pwned=1</script>'"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rnn")
    return out, run(out, Config.tiny(), command=EVIL_COMMAND)


@pytest.mark.heavy
def test_run_writes_results_figures_and_report(tiny_run):
    out, res = tiny_run
    data = json.loads((out / "results.json").read_text())
    assert set(data["tasks"]) == {"copy", "induction", "parity"}
    for task, r in data["tasks"].items():
        assert len(r["runs"]) == 2 * Config.tiny().seeds
        vocab = rnn_tasks.TASKS[task][1]
        tf, lstm = build_pair(vocab, 32, 2, 4, Config.tiny().max_len(), 0)
        assert r["params"] == {"transformer": n_params(tf), "lstm": n_params(lstm), "lstm_hidden": lstm.hidden}
        for run_ in r["runs"]:
            assert all(0 <= a["token"] <= 1 for a in run_["accuracy"].values())
        mean = r["summary"]["token"]["transformer"]["mean"]
        assert mean == [sum(x["accuracy"][str(s)]["token"] for x in r["runs"] if x["model"] == "transformer")
                        / Config.tiny().seeds for s in r["test_sizes"]]
    t = data["timing"]
    assert all(v > 0 for series in t["train_step_s"].values() for v in series)
    assert set(t["generate_s_per_token"]) == {"transformer", "transformer (no cache)", "lstm"}
    for name in res["figures"]:
        assert (out / name).stat().st_size > 1000
        assert not name.endswith(".png") or (out / name).read_bytes()[:4] == b"\x89PNG"
    html = (out / "report.html").read_text()
    assert "&lt;script&gt;" in html and "<script" not in html
    assert html.count("data:image/png;base64,") == sum(n.endswith(".png") for n in res["figures"])
    assert "Caveats" in html and "tracemalloc" in html
    assert not list(out.glob(".*.tmp"))


@pytest.mark.heavy
def test_report_opens_offline_in_chromium(tiny_run):
    sync_api = pytest.importorskip("playwright.sync_api")
    from browser import launch, open_page

    out, res = tiny_run
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page, requests = open_page(browser, out / "report.html")
            widths = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
            assert len(widths) == sum(n.endswith(".png") for n in res["figures"]) and min(widths) > 100
            assert page.evaluate("typeof window.__pwned") == "undefined"
            assert "<script>window.__pwned=1</script>" in page.inner_text("#command")
            body = page.inner_text("body")
            assert "Caveats" in body and "Transformer" in body and "LSTM" in body
            assert all(u.startswith(("file:", "data:")) for u in requests), requests
        finally:
            browser.close()


def test_cli_refuses_bad_input_before_writing(tmp_path):
    from click.testing import CliRunner

    from mechscope.cli import main

    a_file = tmp_path / "taken"
    a_file.write_text("keep me")
    r = CliRunner().invoke(main, ["lab", "rnn-vs-transformer", "--out", str(a_file), "--quick"])
    assert r.exit_code == 2 and "is a file" in r.output and "Traceback" not in r.output
    assert a_file.read_text() == "keep me"
    r = CliRunner().invoke(main, ["lab", "rnn-vs-transformer", "--out", str(tmp_path / "o"), "--steps", "0"])
    assert r.exit_code == 2 and "--steps 0" in r.output
    assert not (tmp_path / "o").exists()
    r = CliRunner().invoke(main, ["lab", "rnn-vs-transformer", "--help"])
    assert r.exit_code == 0 and "parity" in r.output and "--quick" in r.output
