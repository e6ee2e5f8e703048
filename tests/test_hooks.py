"""Sites and the run engine against the plain HF forward, on tiny random models of every family."""
import pytest
import torch

import mechscope
from mechscope import MechscopeError, interventions
from mechscope.tiny import tiny_hf

from conftest import ALL_FAMILIES, CAUSAL, tiny

PROMPTS = ["The quick brown fox jumps", "Hi!", "A longer prompt, with punctuation."]

# Literal HF module names per family, written here independently of mechscope's adapters.
HF_NAMES = {
    "gpt2": dict(layers="transformer.h", attn="attn", mlp="mlp", o="attn.c_proj"),
    "llama": dict(layers="model.layers", attn="self_attn", mlp="mlp", o="self_attn.o_proj"),
    "mistral": dict(layers="model.layers", attn="self_attn", mlp="mlp", o="self_attn.o_proj"),
    "qwen2": dict(layers="model.layers", attn="self_attn", mlp="mlp", o="self_attn.o_proj"),
    "phi3": dict(layers="model.layers", attn="self_attn", mlp="mlp", o="self_attn.o_proj"),
    "gpt_neox": dict(layers="gpt_neox.layers", attn="attention", mlp="mlp", o="attention.dense"),
    "gpt_neox_seq": dict(layers="gpt_neox.layers", attn="attention", mlp="mlp", o="attention.dense"),
    "bert": dict(layers="bert.encoder.layer", attn="attention.output.dense", mlp="output.dense",
                 o="attention.output.dense"),
}


def plain_forward(m, prompts, padding_side="right", **kw):
    b = m.batch(prompts, padding_side)
    with torch.no_grad():
        return m.hf(**m.forward_kwargs(b), **kw), b


def module_outputs(m, family, prompts, layer):
    """attn_out and mlp_out at `layer` read with our own plain hooks on the HF modules."""
    names, got = HF_NAMES[family], {}
    mods = dict(m.hf.named_modules())
    block = f"{names['layers']}.{layer}"

    def grab(key):
        return lambda mod, a, out: got.__setitem__(key, out[0] if isinstance(out, tuple) else out)

    hs = [mods[f"{block}.{names['attn']}"].register_forward_hook(grab("attn")),
          mods[f"{block}.{names['mlp']}"].register_forward_hook(grab("mlp"))]
    try:
        plain_forward(m, prompts)
    finally:
        for h in hs:
            h.remove()
    return got


def block_sites(m, layer):
    kinds = ["hook_resid_pre", "attn.hook_pattern", "attn.hook_z", "hook_attn_out", "mlp.hook_post",
             "hook_mlp_out", "hook_resid_post"] + (["hook_resid_mid"] if m.adapter.resid_mid else [])
    return [f"blocks.{layer}.{k}" for k in kinds]


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_resid_post_equals_hf_hidden_states(family):
    m = tiny(family)
    n = m.cfg.n_layers
    sites = [f"blocks.{i}.hook_resid_post" for i in range(n)] + ["hook_embed"]
    sites += ["ln_final.hook_normalized"] if m.adapter.ln_final else []
    logits, cache = m.run(PROMPTS, capture=sites)
    out, _ = plain_forward(m, PROMPTS, output_hidden_states=True)
    hs = out.hidden_states  # n + 1 entries; HF applies the final norm to the last one
    for i in range(n - 1):
        torch.testing.assert_close(cache[f"blocks.{i}.hook_resid_post"], hs[i + 1], rtol=0, atol=1e-5)
    last = cache["ln_final.hook_normalized"] if m.adapter.ln_final else cache[f"blocks.{n - 1}.hook_resid_post"]
    torch.testing.assert_close(last, hs[-1], rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, out.logits, rtol=0, atol=1e-5)
    # the unembedding of the last residual stream is the model's own logits
    torch.testing.assert_close(m.unembed(cache[f"blocks.{n - 1}.hook_resid_post"]), out.logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_attn_mlp_z_match_modules(family):
    m = tiny(family)
    layer = 1
    _, cache = m.run(PROMPTS, capture=block_sites(m, layer))
    got = module_outputs(m, family, PROMPTS, layer)
    torch.testing.assert_close(cache[f"blocks.{layer}.hook_attn_out"], got["attn"], rtol=0, atol=1e-5)
    torch.testing.assert_close(cache[f"blocks.{layer}.hook_mlp_out"], got["mlp"], rtol=0, atol=1e-5)
    z = cache[f"blocks.{layer}.attn.hook_z"]
    b, t = z.shape[:2]
    assert z.shape == (b, t, m.cfg.n_heads, m.cfg.d_head)
    o_proj = dict(m.hf.named_modules())[f"{HF_NAMES[family]['layers']}.{layer}.{HF_NAMES[family]['o']}"]
    with torch.no_grad():
        through = o_proj(z.reshape(b, t, -1))  # (B, T, d_model)
    torch.testing.assert_close(through, cache[f"blocks.{layer}.hook_attn_out"], rtol=0, atol=1e-5)
    post = cache[f"blocks.{layer}.mlp.hook_post"]
    assert post.shape == (b, t, m.cfg.d_mlp)
    if m.adapter.resid_mid == "attn_residual":
        torch.testing.assert_close(cache[f"blocks.{layer}.hook_resid_mid"],
                                   cache[f"blocks.{layer}.hook_resid_pre"] + cache[f"blocks.{layer}.hook_attn_out"],
                                   rtol=0, atol=0)
        torch.testing.assert_close(cache[f"blocks.{layer}.hook_resid_post"],
                                   cache[f"blocks.{layer}.hook_resid_mid"] + cache[f"blocks.{layer}.hook_mlp_out"],
                                   rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_pattern_equals_hf_eager_attention(family):
    m = tiny(family)
    hf_eager, _ = tiny_hf(family)  # same seed -> same weights
    hf_eager.set_attn_implementation("eager")
    b = m.batch(PROMPTS)
    with torch.no_grad():
        ref = hf_eager(**m.forward_kwargs(b), output_attentions=True).attentions
    sites = [f"blocks.{i}.attn.hook_pattern" for i in range(m.cfg.n_layers)]
    _, cache = m.run(PROMPTS, capture=sites)
    real = b.attention_mask[:, None, :, None] & b.attention_mask[:, None, None, :]  # ignore pad rows/cols
    for i, s in enumerate(sites):
        assert cache[s].shape == ref[i].shape
        torch.testing.assert_close(cache[s] * real, ref[i] * real, rtol=0, atol=1e-5)
        rows = cache[s].sum(-1)[b.attention_mask[:, None, :].expand_as(cache[s].sum(-1))]
        torch.testing.assert_close(rows, torch.ones_like(rows), rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_pattern_only_makes_its_own_layer_eager(family, monkeypatch):
    import transformers.integrations.sdpa_attention as sdpa

    m = tiny(family)
    calls = []
    real = sdpa.sdpa_attention_forward
    monkeypatch.setattr(sdpa, "sdpa_attention_forward", lambda mod, *a, **k: calls.append(mod) or real(mod, *a, **k))
    m.run(PROMPTS[:1], capture=["blocks.1.attn.hook_pattern"])
    assert len(calls) == m.cfg.n_layers - 1  # every other layer stayed on the fused kernel
    assert m.module(f"{m.adapter.layers}.1.{m.adapter.attn_core}") not in calls
    calls.clear()
    m.run(PROMPTS[:1])
    assert len(calls) == m.cfg.n_layers  # and the flag is gone after the run


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_early_stop_equals_full_run_and_skips_later_layers(family):
    m = tiny(family)
    sites = block_sites(m, 1) + ["hook_embed"]
    _, full = m.run(PROMPTS, capture=sites, logits=True)
    calls = []
    last = m.module(f"{m.adapter.layers}.{m.cfg.n_layers - 1}")
    h = last.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        logits, early = m.run(PROMPTS, capture=sites, logits=False)
    finally:
        h.remove()
    assert logits is None and calls == []  # the last block never ran
    for s in sites:
        assert torch.equal(full[s], early[s]), s


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_patch_with_own_value_is_bitwise_identity(family):
    m = tiny(family)
    sites = block_sites(m, 1) + ["hook_embed"] + (["hook_pos_embed"] if m.adapter.pos_embed else [])
    for s in sites:
        # a pattern is computed explicitly (eager) wherever it is read or written: compare with a run reading it
        ref, _ = m.run(PROMPTS, capture=[s] if s.endswith("hook_pattern") else [])
        patched, _ = m.run(PROMPTS, patch={s: lambda a: a.clone()})
        assert torch.equal(patched, ref), s
    ref, cache = m.run(PROMPTS, capture=sites)
    for s in sites:  # patching with a tensor equal to the captured value, too
        patched, _ = m.run(PROMPTS, patch={s: cache[s]}, capture=[x for x in sites if x.endswith("hook_pattern")])
        assert torch.equal(patched, ref), s


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_equals_unbatched(family, side):
    m = tiny(family)
    sites = [s for i in range(m.cfg.n_layers) for s in block_sites(m, i)]
    logits, cache = m.run(PROMPTS, capture=sites, padding_side=side)
    assert cache.padding_side == side
    for i, p in enumerate(PROMPTS):
        alone_logits, alone = m.run([p], capture=sites)
        n = alone_logits.shape[1]
        real = cache.attention_mask[i]
        assert int(real.sum()) == n and int(cache.lengths[i]) == n
        assert bool(real[-1] if side == "left" else real[0])
        torch.testing.assert_close(logits[i][real], alone_logits[0], rtol=0, atol=1e-5)
        for s in sites:
            got = cache[s][i]
            if s.endswith("hook_pattern"):  # (H, Tq, Tk): real queries x real keys
                got = got[:, real][:, :, real]
            else:
                got = got[real]
            torch.testing.assert_close(got, alone[s][0], rtol=0, atol=1e-5, msg=f"{family} {side} {s}")


@pytest.mark.parametrize("family", CAUSAL)
def test_packed_row_equals_each_prompt_alone(family):
    """Model.packed lays prompts side by side in one row (no padding); every site and logit equals a run of each
    prompt alone, and attention never crosses from one prompt into the next."""
    m = tiny(family)
    sites = [s for i in range(m.cfg.n_layers) for s in block_sites(m, i) if not s.endswith("hook_pattern")]
    rows = [m.encode(p) for p in PROMPTS]
    batch = m.packed(rows)
    assert batch.input_ids.shape == (1, sum(map(len, rows))) and batch.segments == tuple(map(len, rows))
    logits, cache = m.run(batch, capture=sites)
    start = 0
    for r in rows:
        alone_logits, alone = m.run([r], capture=sites)
        sl = slice(start, start + len(r))
        torch.testing.assert_close(logits[0, sl], alone_logits[0], rtol=0, atol=1e-5, msg=family)
        for s in sites:
            torch.testing.assert_close(cache[s][0, sl], alone[s][0], rtol=0, atol=1e-5, msg=f"{family} {s}")
        start += len(r)
    cfg_attrs = [k for c in (m.hf.config,) for k in vars(c) if k.startswith("_mechscope_segments")]
    assert not cfg_attrs, "the segments must not outlive the run"
    with pytest.raises(MechscopeError, match="hook_pattern"):
        m.run(batch, capture=["blocks.0.attn.hook_pattern"])
    assert not any(k.startswith("_mechscope_segments") for k in vars(m.hf.config))


def test_packed_refuses_bidirectional_models():
    with pytest.raises(MechscopeError, match="cannot run packed"):
        tiny("bert").packed([[1, 2, 3]])


@pytest.mark.parametrize("family", CAUSAL)
def test_resid_mid_patch_reaches_the_block(family):
    """Patching resid_mid must change what the MLP reads, exactly as adding to the residual would."""
    m = tiny(family)
    if not m.adapter.resid_mid:
        with pytest.raises(MechscopeError, match="parallel"):
            m.run(PROMPTS, capture=["blocks.1.hook_resid_mid"])
        return
    vec = torch.randn(m.cfg.d_model, generator=torch.Generator().manual_seed(0))
    _, cache = m.run(PROMPTS, capture=["blocks.1.hook_resid_mid", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"],
                     patch={"blocks.1.hook_resid_mid": interventions.add(vec, positions=2)})
    mid = cache["blocks.1.hook_resid_mid"]
    _, clean = m.run(PROMPTS, capture=["blocks.1.hook_resid_mid"])
    torch.testing.assert_close(mid[:, 2], clean["blocks.1.hook_resid_mid"][:, 2] + vec, rtol=0, atol=1e-5)
    torch.testing.assert_close(cache["blocks.1.hook_resid_post"], mid + cache["blocks.1.hook_mlp_out"],
                               rtol=0, atol=1e-5)


def test_interventions_replace_zero_mean_add():
    m = tiny("llama")
    a, b = "Alice went home", "Bobby went home"
    _, clean = m.run(a, capture=["blocks.0.attn.hook_z", "blocks.1.hook_resid_post"])
    z = clean["blocks.0.attn.hook_z"]
    _, c = m.run(b, capture=["blocks.0.attn.hook_z"],
                 patch={"blocks.0.attn.hook_z": interventions.replace(z, positions=[1, 2], heads=[0, 3])})
    _, plain_b = m.run(b, capture=["blocks.0.attn.hook_z"])
    got, zb = c["blocks.0.attn.hook_z"], plain_b["blocks.0.attn.hook_z"]
    for p in range(z.shape[1]):
        for h in range(z.shape[2]):
            expect = z[0, p, h] if (p in (1, 2) and h in (0, 3)) else zb[0, p, h]
            assert torch.equal(got[0, p, h], expect)
    _, c = m.run(b, capture=["blocks.0.attn.hook_z"], patch={"blocks.0.attn.hook_z": interventions.zero_ablate(heads=1)})
    assert torch.count_nonzero(c["blocks.0.attn.hook_z"][:, :, 1]) == 0
    assert torch.equal(c["blocks.0.attn.hook_z"][:, :, 0], zb[:, :, 0])
    mean = interventions.mean_over_tokens(clean["blocks.1.hook_resid_post"])
    _, c = m.run(b, capture=["blocks.1.hook_resid_post"],
                 patch={"blocks.1.hook_resid_post": interventions.mean_ablate(mean, positions=0)})
    assert torch.equal(c["blocks.1.hook_resid_post"][0, 0], mean)
    # steering with the zero vector changes nothing; a real vector changes the logits
    ref, _ = m.run(b)
    same, _ = m.run(b, patch={"blocks.1.hook_resid_post": interventions.add(torch.zeros(m.cfg.d_model))})
    assert torch.equal(same, ref)
    moved, _ = m.run(b, patch={"blocks.1.hook_resid_post": interventions.add(torch.ones(m.cfg.d_model), scale=3.0)})
    assert not torch.allclose(moved, ref)


def test_hooks_removed_even_when_forward_raises():
    m = tiny("gpt2")

    def boom(act):
        raise RuntimeError("boom")

    def count():  # HF itself may keep hooks of its own (output capturing): compare before and after
        return sum(len(mod._forward_hooks) + len(mod._forward_pre_hooks) for mod in m.hf.modules())

    before = count()
    with pytest.raises(RuntimeError, match="boom"):
        m.run("hello", patch={"blocks.1.hook_mlp_out": boom}, capture=["blocks.0.attn.hook_pattern"])
    assert count() == before
    assert not any(hasattr(mod, "_mechscope_pattern") for mod in m.hf.modules())


def test_negative_layers_and_escape_hatch():
    m = tiny("llama")
    _, c = m.run("hello", capture=["blocks.-1.hook_resid_post", "module:model.layers.1.self_attn.o_proj:in",
                                   "module:model.layers.1.mlp:out"])
    n = m.cfg.n_layers
    assert f"blocks.{n - 1}.hook_resid_post" in c
    _, ref = m.run("hello", capture=["blocks.1.attn.hook_z", "blocks.1.hook_mlp_out"])
    z = ref["blocks.1.attn.hook_z"]
    assert torch.equal(c["module:model.layers.1.self_attn.o_proj:in"], z.reshape(*z.shape[:2], -1))
    assert torch.equal(c["module:model.layers.1.mlp:out"], ref["blocks.1.hook_mlp_out"])


@pytest.mark.parametrize("bad,match", [
    ("blocks.0.hook_resid_psot", "blocks.0.hook_resid_post"),
    ("blocks.7.hook_resid_post", "out of range"),
    ("blocks.-9.hook_mlp_out", "out of range"),
    ("hook_pos_embed", "does not exist"),
    ("module:model.layers.1.nope:out", "No module"),
    ("module:x:sideways", "escape-hatch"),
])
def test_bad_sites_name_closest_valid(bad, match):
    with pytest.raises(MechscopeError, match=match):
        tiny("llama").run("hello", capture=[bad])


def test_bad_prompts():
    m = tiny("gpt2")
    with pytest.raises(MechscopeError, match="empty"):
        m.run("")
    with pytest.raises(MechscopeError, match="n_ctx"):
        m.run("x" * (m.cfg.n_ctx + 5))
    with pytest.raises(MechscopeError, match="padding_side"):
        m.run("hi", padding_side="middle")


def test_unsupported_family_names_supported_ones():
    import transformers as tf

    hf = tf.GPTJForCausalLM(tf.GPTJConfig(n_embd=32, n_layer=1, n_head=2, vocab_size=64, n_positions=32,
                                          rotary_dim=8))
    with pytest.raises(MechscopeError, match="gpt2.*llama|llama.*gpt2") as e:
        mechscope.Model(hf, None)
    assert "module:" in str(e.value)
